"""The timm/PyTorch side of `python -m vit_jax.benchmark --vs-timm`: the same architecture, AdamW,
bf16 autocast on GPU, fused attention (timm's default), optionally torch.compile. torch and timm are
imported only here, on use. Only a plain ViT (patch tokenizer) has its twin in timm: `check_model`
says so in one line for any other model, `require` names a missing torch or timm."""

import importlib
import time

from vit_jax.common.errors import Error, first_line
from vit_jax.models import VisionTransformer
from vit_jax.tools import flops
from vit_jax.tools.benchmark import Runner, max_rss_bytes

INSTALL = "pip install torch timm"
# ViT options timm's VisionTransformer has no equivalent of here: (option, the plain value).
PLAIN = (("tokenizer", "patch"), ("lsa", False), ("distill_token", False))


class TimmError(Error, ValueError):
    """torch or timm missing, or a model timm's VisionTransformer cannot build."""


def require() -> None:
    """Imports torch and timm; a `TimmError` naming the one that fails and how to install it."""
    for name in ("torch", "timm"):
        try:
            importlib.import_module(name)
        except ImportError as e:
            missing = getattr(e, "name", None) or name
            raise TimmError(
                f"--vs-timm needs torch and timm; {missing} cannot be imported "
                f"({first_line(e)}): {INSTALL}"
            ) from None


def check_model(model) -> None:
    """A `TimmError` unless `model` is a plain ViT that timm's VisionTransformer can build."""
    if type(model) is not VisionTransformer:
        raise TimmError(
            f"--vs-timm builds timm's VisionTransformer; a {type(model).__name__} has no twin "
            "there: use --model-name=vit or drop --vs-timm"
        )
    for key, plain in PLAIN:
        if getattr(model, key, plain) != plain:
            raise TimmError(
                f"--vs-timm builds timm's VisionTransformer with a patch embedding: "
                f"{key}={getattr(model, key)!r} has no equivalent there; drop the option or "
                "--vs-timm"
            )


def build_timm_model(args, model):
    """The timm VisionTransformer with `model`'s sizes (class token, token pooling, exact GELU)."""
    check_model(model)
    from timm.models.vision_transformer import VisionTransformer  # noqa: PLC0415

    return VisionTransformer(
        img_size=args.image_size,
        patch_size=model.patch_size[0],
        num_classes=args.num_classes,
        embed_dim=model.hidden_size,
        depth=model.depth,
        num_heads=model.num_heads,
        mlp_ratio=model.mlp_dim / model.hidden_size,
        qkv_bias=True,
        class_token=model.num_prefix > 0,
        global_pool="token" if model.num_prefix else "avg",
    )


def prepare_timm(args, model) -> Runner:
    """The same architecture in timm: AdamW, bf16 autocast when --dtype=bfloat16."""
    import timm  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    net = build_timm_model(args, model).to(device)
    net.train(args.mode == "train")
    num_params = sum(p.numel() for p in net.parameters())
    if args.timm_compile:
        net = torch.compile(net)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, args.num_classes, (args.batch,), device=device)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=args.dtype == "bfloat16")
    # fused=True is torch's fastest AdamW on GPU (one kernel for all parameters).
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05, fused=cuda or None)

    def train():
        with autocast:
            loss = F.cross_entropy(net(images).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), args.grad_clip)
        opt.step()
        return loss

    def infer():
        with torch.no_grad(), autocast:
            return net(images)

    run = train if args.mode == "train" else infer
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step():
        out = run()
        sync()
        return out

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start  # first step: allocation, autotuning, torch.compile

    def record(median, times):
        if cuda:
            memory = dict(
                peak_memory_bytes=torch.cuda.max_memory_allocated(), memory_source="device peak"
            )
            name = torch.cuda.get_device_name()
        else:
            memory = dict(peak_memory_bytes=max_rss_bytes(), memory_source="process max RSS")
            name = "cpu"
        return dict(
            framework="timm-compile" if args.timm_compile else "timm",
            device=name,
            torch_version=torch.__version__,
            timm_version=timm.__version__,
            torch_threads=torch.get_num_threads(),
            timm_params=num_params,
            compile_s=compile_s,
            step_s_median=median,
            step_s_all=times,
            images_per_s=args.batch / median,
            flops_per_image=flops.step_flops(model, (args.image_size, args.image_size), args.mode),
            flops_per_image_xla=None,
            **memory,
        )

    return Runner(step, record)

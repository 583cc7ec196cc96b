"""The timm/PyTorch side of `python -m vit_jax.benchmark --vs-timm`: the same architecture, AdamW,
bf16 autocast on GPU, fused attention (timm's default), optionally torch.compile. torch and timm are
imported only here, on use."""

import time

from vit_jax.tools import flops
from vit_jax.tools.benchmark import Runner, max_rss_bytes


def build_timm_model(args, model):
    """The timm VisionTransformer with `model`'s sizes (class token, token pooling, exact GELU)."""
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

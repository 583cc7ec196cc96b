"""Makes tests/fixtures/torch_vit/: tiny ViTs built and run by the REAL timm and transformers.

Needs torch, timm, transformers and safetensors (not package dependencies; a separate venv):

  python -m venv /tmp/torch_venv && /tmp/torch_venv/bin/pip install torch timm transformers \
      safetensors --index-url ... (CPU wheels are enough)
  /tmp/torch_venv/bin/python scripts/make_torch_fixtures.py [OUT_DIR]

Each fixture folder holds what the library's own saving writes (`model.safetensors`, `config.json`,
and transformers' `preprocessor_config.json`) and `expected.npz`: `input` [2, 16, 16, 3] (NHWC, the
model sees it as NCHW), the library's `logits` on it, and for `timm_token` also `input_24` and
`logits_24`: the same weights at 24 px with timm's own `resample_abs_pos_embed` (bilinear, no
antialias: the interpolation jax.image.resize computes when upsampling). Every parameter is redrawn
from a seeded normal, so no zero-initialised head or bias hides a mapping error.
"""

import json
import os
import sys

import numpy as np
import timm
import torch
import transformers
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fixtures", "torch_vit")
TINY = dict(
    img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5
)
TIMM = {  # fixture name → timm VisionTransformer arguments
    "timm_token": dict(TINY, global_pool="token"),
    # avg pooling with its fc_norm, two registers (their position rows are folded), LayerScale, q/k norm
    "timm_avg": dict(TINY, global_pool="avg", reg_tokens=2, init_values=0.5, qk_norm=True),
    # SigLIP-style: no class token, MAP head, tanh GELU
    "timm_map": dict(TINY, global_pool="map", class_token=False, act_layer="gelu_tanh"),
}


def _randomise(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.1 if "norm" in name else 0.5
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=gen))


def _inputs(size: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randn(2, size, size, 3).astype(np.float32)


def _run(model, x_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2)))
    return (out.logits if hasattr(out, "logits") else out).numpy()


def _timm(name: str, args: dict, seed: int) -> None:
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    model = VisionTransformer(**args).eval()
    _randomise(model, seed)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(folder, "model.safetensors"))
    model_args = {k: v for k, v in args.items()}
    cfg = dict(  # the fields of timm's hub config.json (timm.models._hub.save_config_for_hf)
        architecture="vit_base_patch16_224", num_classes=args["num_classes"],
        num_features=args["embed_dim"], global_pool=args["global_pool"], model_args=model_args,
        pretrained_cfg=dict(input_size=[3, 16, 16], interpolation="bicubic", crop_pct=0.875,
                            crop_mode="center", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                            num_classes=args["num_classes"], first_conv="patch_embed.proj",
                            classifier="head"),
    )  # fmt: skip
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    x = _inputs(16, seed)
    expected = dict(input=x, logits=_run(model, x))
    if name == "timm_token":  # the same weights on a 6x6 grid, resized by timm
        big = VisionTransformer(**dict(args, img_size=24)).eval()
        sd24 = dict(sd)
        sd24["pos_embed"] = resample_abs_pos_embed(
            sd["pos_embed"], (6, 6), (4, 4), num_prefix_tokens=1, interpolation="bilinear",
            antialias=False,
        )  # fmt: skip
        big.load_state_dict(sd24)
        x24 = _inputs(24, seed + 100)
        expected.update(input_24=x24, logits_24=_run(big, x24))
    np.savez(os.path.join(folder, "expected.npz"), **expected)
    print(f"{name}: logits {expected['logits'].shape}, timm {timm.__version__}")


def _transformers(name: str, seed: int) -> None:
    folder = os.path.join(OUT, name)
    cfg = transformers.ViTConfig(
        image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=5, id2label={i: f"class_{i}" for i in range(5)},
        label2id={f"class_{i}": i for i in range(5)},
        layer_norm_eps=1e-2,  # far from our 1e-6 (and its default 1e-12): the test sees it is read
    )  # fmt: skip
    model = transformers.ViTForImageClassification(cfg).eval()
    _randomise(model, seed)
    model.save_pretrained(folder)
    transformers.ViTImageProcessor(size=dict(height=16, width=16)).save_pretrained(folder)
    x = _inputs(16, seed)
    np.savez(os.path.join(folder, "expected.npz"), input=x, logits=_run(model, x))
    print(f"{name}: transformers {transformers.__version__}, layer_norm_eps {cfg.layer_norm_eps}")


if __name__ == "__main__":
    for i, (name, args) in enumerate(TIMM.items()):
        _timm(name, args, seed=i)
    _transformers("hf_vit", seed=10)

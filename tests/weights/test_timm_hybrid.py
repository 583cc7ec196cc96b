"""timm's own reader of Google's hybrid `.npz` layout loads our hybrid export and gives our logits.

Runs only where torch and timm are installed (skipped in CI, which has neither): timm's
`vit_*_r*` models are a `ResNetV2` stem (`StdConv2dSame`, GroupNorm) under `patch_embed.backbone`,
and `timm.models.vision_transformer._load_weights` reads `conv_root`, `gn_root`,
`block{i}/unit{j}/...` beside `embedding` and `Transformer/...`: the names of Google's released
`R50+ViT-B_16.npz` that our hybrid uses.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models
from vit_jax.weights import npz

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from timm.models.vision_transformer import _load_weights  # noqa: E402


@pytest.mark.parametrize(
    "variant, timm_name",
    [("R+Ti/16", "vit_tiny_r_s16_p8_224"), ("R26+S/32", "vit_small_r26_s32_224")],
)
def test_timm_reads_our_hybrid_export(tmp_path, variant, timm_name):
    size, classes = 64, 5
    model = models.create_model(
        variant, classes, model_name="hybrid", depth=2, dtype="float32", gelu_approximate=False
    )
    images = np.random.RandomState(0).normal(size=(2, size, size, 3)).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(1), jnp.asarray(images))
    # A non-zero head, so the logits compare every weight.
    params = jax.tree_util.tree_map(np.asarray, variables["params"])
    params["head"]["kernel"] = (
        np.random.RandomState(2)
        .normal(scale=0.1, size=params["head"]["kernel"].shape)
        .astype(np.float32)
    )
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(images)))
    path = npz.export_npz(params, str(tmp_path / "hybrid.npz"))

    theirs_model = timm.create_model(timm_name, num_classes=classes, img_size=size, depth=2)
    theirs_model.eval()
    _load_weights(theirs_model, path)
    with torch.no_grad():
        theirs = theirs_model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()

    rel = np.max(np.abs(theirs - ours)) / np.max(np.abs(ours))
    print(f"{variant} vs timm {timm_name}: max relative logit difference {rel:.1e}")
    assert rel < 1e-4, (variant, rel)

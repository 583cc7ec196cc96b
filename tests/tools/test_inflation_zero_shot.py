"""scripts/inflation_zero_shot.py: the image head's top-1 on clips, before and after inflation."""

import os
import sys

import jax
import numpy as np

from tests.helpers.paths import ROOT
from vit_jax import models
from vit_jax.config import load_config
from vit_jax.weights import inflate, npz


def test_central_frame_sees_the_middle_frame_of_each_tubelet_repeat_the_mean(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import inflation_zero_shot

    config = load_config(os.path.join(ROOT, "configs", "video_digits.py"))
    config.model.update(dict(hidden_size=16, depth=1, mlp_dim=32, num_frames=4))
    image = inflate.image_twin(models.from_config(config.model, 10, "vivit"))
    rng = np.random.default_rng(0)
    params = image.init(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3), np.float32))["params"]
    params["head"]["kernel"] = rng.normal(0, 1, params["head"]["kernel"].shape)  # not all class 0
    path = npz.export_npz(params, str(tmp_path / "image.npz"))
    # frames 1 and 3 (the middle frame ⌊t/2⌋ of each 2-frame tubelet) are one image A, frames 0
    # and 2 others; the label is the image model's own prediction on A
    a, b, c = rng.uniform(-1, 1, (3, 24, 1, 16, 16, 3)).astype(np.float32)
    clips = np.concatenate([b, a, c, a], axis=1)
    labels = np.argmax(np.asarray(image.apply({"params": params}, a[:, 0])), -1)
    assert len(set(labels)) >= 2  # not one class for everything
    rows = dict(inflation_zero_shot.zero_shot(path, config.model, clips, labels))
    assert list(rows) == [
        "image model, one frame (mean over frames)",
        "image model, mean of a tubelet's 2 frames",
        "vivit inflated by repeat, image head kept",
        "vivit inflated by central_frame, image head kept",
        "vivit inflated by random, image head kept",  # a fresh kernel: no claim on its value
    ]
    assert rows["vivit inflated by central_frame, image head kept"] == 100.0
    assert (
        50.0 <= rows["image model, one frame (mean over frames)"] < 100.0
    )  # half the frames are A
    assert rows["image model, mean of a tubelet's 2 frames"] < 100.0
    assert rows["vivit inflated by repeat, image head kept"] < 100.0

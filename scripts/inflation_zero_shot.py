"""Zero-shot start of the inflation study (docs/video.md, "Inflation"): the image ViT's own head
on `moving_digits:digits` test clips, before any video training.

  python scripts/inflation_zero_shot.py /tmp/md_image/model.npz

Prints digit top-1 (%) on the 500 test clips of: the image model on each single frame (mean over
the 8 frames), on the mean of a tubelet's two frames (what `repeat` embeds), and the `vivit` model
of configs/video_digits.py inflated with its head kept (`skip_head=False`) by `repeat`, by
`central_frame` and by `random` (a fresh tubelet kernel). All start at the image model's weights
but for that kernel; they differ in what it sees.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models
from vit_jax.config import load_config
from vit_jax.data.sources import open_source
from vit_jax.weights import finetune, inflate


def top1(logits, labels) -> float:
    return 100 * float(np.mean(np.argmax(np.asarray(logits), -1) == labels))


def zero_shot(path: str, model_config, clips: np.ndarray, labels: np.ndarray):
    """[(name, top-1 %)] of the image model at `path` and its two inflations on `clips`
    (float `[N, T, S, S, 3]` in [-1, 1], T even) against `labels`."""
    video = models.from_config(model_config, 10, "vivit")
    image = inflate.image_twin(video)
    size = clips.shape[2:4]
    image_params = finetune.load_pretrained(path, image, size, skip_head=False, gelu_check=False)
    apply_image = jax.jit(lambda x: image.apply({"params": image_params}, x))
    n, t = clips.shape[:2]
    frames = clips.reshape(n * t, *clips.shape[2:])
    per_frame = np.asarray(apply_image(frames)).reshape(n, t, -1)
    pairs = clips.reshape(n, t // 2, 2, *clips.shape[2:]).mean(2).reshape(-1, *clips.shape[2:])
    per_pair = np.asarray(apply_image(pairs)).reshape(n, t // 2, -1)
    rows = [
        ("image model, one frame (mean over frames)",
         float(np.mean([top1(per_frame[:, f], labels) for f in range(t)]))),
        ("image model, mean of a tubelet's 2 frames",
         float(np.mean([top1(per_pair[:, f], labels) for f in range(t // 2)]))),
    ]  # fmt: skip
    for how in inflate.INFLATIONS:
        params = finetune.load_pretrained(
            path, video, size, skip_head=False, inflate_how=how, gelu_check=False
        )
        logits = jax.jit(lambda x, p=params: video.apply({"params": p}, x))(jnp.asarray(clips))
        rows.append((f"vivit inflated by {how}, image head kept", top1(logits, labels)))
    return rows


def main(argv) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python scripts/inflation_zero_shot.py IMAGE_MODEL.npz")
    config = load_config("configs/video_digits.py")
    source = open_source("moving_digits:digits", "test")
    clips = source.images.astype(np.float32) / 127.5 - 1.0  # the eval pipeline's [-1, 1]
    for name, value in zero_shot(argv[0], config.model, clips, source.labels):
        print(f"{value:5.1f}  {name}")


if __name__ == "__main__":
    main(sys.argv[1:])

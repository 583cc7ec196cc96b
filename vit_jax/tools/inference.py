"""A trained model for inference: load a run (workdir, Orbax step or `.npz`), read images, predict.

    model, variables, config, class_names = load_run("/tmp/run")    # latest checkpoint of a run
    images, originals = load_images(["cat.jpg"], config)            # eval preprocessing
    probs = predict_probs(model, variables, images, config.loss)    # [B, num_classes]

Images go through the eval pipeline's own preprocessing (`data.preprocess.eval_image`), so a prediction
on a file equals the prediction on the same image during evaluation.
"""

import json
from typing import List, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from absl import logging

from vit_jax import models
from vit_jax.common import files, trees
from vit_jax.data.core import DataError
from vit_jax.models import scan
from vit_jax.train import checkpoint
from vit_jax.train.checkpoint import CheckpointError
from vit_jax.weights import hub, npz


def load_run(workdir_or_checkpoint: str, config=None):
    """Model and weights of a trained run, ready for `model.apply(variables, images)`.

    Args:
      workdir_or_checkpoint: a run's workdir (its latest checkpoint is used), one Orbax step
        directory (`workdir/checkpoints/N` or `workdir/best/N`), or an exported `.npz` file.
      config: the run's config; default `config.json` of the workdir. Required for an `.npz`.

    Returns:
      (model, variables, config, class_names): `variables` holds numpy `params` (and `batch_stats`
      if the model has any); `class_names` come from the config's dataset, or are "0", "1", ... when
      the dataset cannot be opened here.

    Raises:
      CheckpointError: a missing path, a workdir without checkpoints, no config, or weights that do
        not fit the config's model (one line naming every difference).
    """
    path = workdir_or_checkpoint.rstrip("/")
    if hub.is_safetensors(path):
        return _load_safetensors(path, config)
    if not files.exists(path):
        raise CheckpointError(f"{path} does not exist (expected a workdir, checkpoint or .npz)")
    if path.endswith(".npz") and files.isfile(path):
        if config is None:
            raise CheckpointError(f"{path} holds only weights; pass --config=FILE for its model")
        params, batch_stats = npz.canonical(npz.read_npz(path), path), {}
        source = path
    else:
        ckpt_dir, step = _checkpoint_dir_and_step(path)
        config = config if config is not None else _saved_config(files.dirname(ckpt_dir))
        state = checkpoint.restore(ckpt_dir, step)  # host NumPy arrays, any device count
        params, batch_stats = trees.flatten(state["params"], "/"), state.get("batch_stats") or {}
        source = f"{ckpt_dir}/{step}"
    names = _class_names(config)
    # The head's width is the truth; the dataset's classes only name them.
    head = params.get("head/kernel")
    num_classes = head.shape[-1] if head is not None else config.num_classes or len(names)
    model = models.from_config(config.model, num_classes, config.get("model_name", "vit"))
    variables = {"params": _fit(model, config, params, source)}
    if batch_stats:
        # in the model's block layout (a checkpoint written before a resume with another model.scan)
        layout = scan.stack_blocks if getattr(model, "scan", False) else scan.unstack_blocks
        variables["batch_stats"] = layout(batch_stats)
    if len(names) != num_classes:
        names = tuple(str(i) for i in range(num_classes))
    return model, variables, config, names


def _load_safetensors(path: str, config=None):
    """`load_run` of a timm / transformers / our `.safetensors` checkpoint (file, folder, `hf://`):
    without `config`, the model, image size and preprocessing are the checkpoint's own."""
    from vit_jax import config as config_lib  # noqa: PLC0415
    from vit_jax.config import from_checkpoint  # noqa: PLC0415

    heads = config.model.get("num_heads") if config is not None else None
    ckpt = from_checkpoint.load(path, heads)
    if config is None:
        config = config_lib.base_config("vit")
        from_checkpoint.apply(config, ckpt, image_size=True)
    elif config.get("init_from", {}).get("from_checkpoint", True):
        from_checkpoint.apply(config, ckpt)
    params = npz.canonical(ckpt.flat, path)
    head = params.get("head/kernel")
    num_classes = head.shape[-1] if head is not None else 0
    model = models.from_config(config.model, num_classes, "vit")
    variables = {"params": _fit(model, config, params, path)}
    names = tuple(ckpt.labels) if len(ckpt.labels) == num_classes else _class_names(config)
    if len(names) != num_classes:
        names = tuple(str(i) for i in range(num_classes))
    return model, variables, config, names


def _checkpoint_dir_and_step(path: str) -> Tuple[str, int]:
    """(directory of Orbax steps, step) for a workdir (latest step) or one step directory."""
    base = path.rsplit("/", 1)[-1]
    if base.isdigit() and files.exists(files.join(path, "_CHECKPOINT_METADATA")):
        return files.dirname(path), int(base)
    ckpt_dir = files.join(path, "checkpoints")
    steps = checkpoint.saved_steps(ckpt_dir)
    if not steps:
        raise CheckpointError(
            f"no checkpoint in {path}: expected a workdir with checkpoints/<step>, a step directory "
            "or an .npz file"
        )
    return ckpt_dir, max(steps)


def _saved_config(workdir: str) -> ml_collections.ConfigDict:
    path = files.join(workdir, "config.json")
    if not files.exists(path):
        raise CheckpointError(
            f"no config.json in {workdir}; pass --config=FILE for the run's model"
        )
    return ml_collections.ConfigDict(json.loads(files.read_text(path)))


def _fit(model, config, flat, source: str) -> dict:
    """Flat '/'-keyed weights checked against the model's params (position tables resized if needed)."""
    frames = (model.num_frames,) if hasattr(model, "tubelet_size") else ()  # a vivit clip
    size = (1, *frames, config.image_size, config.image_size, 3)
    target = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros(size, np.float32))
    try:
        return npz.match_params(flat, target["params"], source=source)
    except ValueError as e:
        raise CheckpointError(f"{e} (is the config the run's own?)") from None


def _class_names(config) -> Tuple[str, ...]:
    from vit_jax import data  # noqa: PLC0415  (TensorFlow only where data is read)

    try:
        return data.get_info(config.dataset, config.train_split, config.data_dir).class_names
    except DataError as e:
        # Predicting on single files must not need the training data on this machine.
        logging.warning("class names unavailable (%s); printing class indices", e)
        return ()


def load_images(paths: Sequence[str], config) -> Tuple[np.ndarray, List[np.ndarray]]:
    """Image files → the model's inputs `[B, S, S, 3]` (eval preprocessing) and the decoded originals.

    Raises:
      FileNotFoundError: a path that does not exist.
      DataError: a file that is not a decodable image.
    """
    from vit_jax.data import preprocess  # noqa: PLC0415
    from vit_jax.data._tf import tf  # noqa: PLC0415
    from vit_jax.data.core import first_line  # noqa: PLC0415
    from vit_jax.data.options import read_config  # noqa: PLC0415

    aug = read_config(config).aug
    if config.get("model_name") == "vivit":  # clips: folders of frames or .npy arrays
        return load_clips(paths, config, aug)
    inputs, originals = [], []
    for path in paths:
        if files.isdir(path):
            raise DataError(f"{path} is a folder, not an image file; name the image files")
        if not files.isfile(path):
            raise FileNotFoundError(f"image file {path} does not exist")
        raw = tf.constant(files.read_bytes(path))
        try:
            original = preprocess.decode(raw)
            inputs.append(preprocess.eval_image(raw, config.image_size, aug).numpy())
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            raise DataError(f"cannot read image {path}: {first_line(e)}") from None
        originals.append(original.numpy())
    return np.stack(inputs).astype(np.float32), originals


def load_clips(paths: Sequence[str], config, aug) -> Tuple[np.ndarray, List[np.ndarray]]:
    """Clips (folders of frames or `.npy`, `vit_jax.data.clips`) → `[B, T, S, S, 3]`: the centre
    window of `config.clip_frames` (None: `model.num_frames`) frames `clip_stride` apart, each frame
    with the eval preprocessing (as the training run's evaluation)."""
    from vit_jax.data import clips, video  # noqa: PLC0415

    inputs, originals = [], []
    n = config.get("clip_frames") or config.model.num_frames
    stride = config.get("clip_stride") or 1
    for path in paths:
        clip = clips.read_clip(path)
        window = clips.sample(clip, n, stride, clips.window_starts(len(clip), n, stride)[0])
        inputs.append(video.eval_clip(window, config.image_size, aug).numpy())
        originals.append(window[len(window) // 2])
    return np.stack(inputs).astype(np.float32), originals


def predict_probs(model, variables, images, loss: str = "softmax_xent") -> np.ndarray:
    """Class probabilities `[B, num_classes]`: sigmoids for a `sigmoid_xent` model, else softmax."""
    logits = jax.jit(model.apply)(variables, images)
    probs = jax.nn.sigmoid(logits) if loss == "sigmoid_xent" else jax.nn.softmax(logits, axis=-1)
    return np.asarray(probs)


def top_k(probs: np.ndarray, k: int, class_names: Optional[Sequence[str]] = None):
    """Per row, the `k` most likely `(class name, probability)` pairs, most likely first."""
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    name = (lambda i: class_names[i]) if class_names else str
    return [[(name(int(i)), float(p[i])) for i in row] for p, row in zip(probs, order)]

"""Orbax checkpoints of the train state: save every N steps, keep the last K (+ best), auto-resume,
and the run's `config.json`.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-write (even `kill -9` during an asynchronous save) leaves no step that `latest_step()` picks up.
`restore` is the one reader of a saved state: resume (sharded), the ablation's final evaluation and
inference (host arrays) all go through it.
"""

import contextlib
import gc
import json
import logging
import os
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from vit_jax import config as config_lib
from vit_jax import models
from vit_jax.common import files, trees
from vit_jax.common.errors import Error, first_line
from vit_jax.models import scan
from vit_jax.train import save_failure

# Keys that may differ between the saved run and a resumed one without changing what is trained.
RESUMABLE_KEYS = (
    "total_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "keep_best",
    "async_checkpointing", "allow_config_change", "progress_bar", "prefetch", "eval_batch_size",
    "profile_steps",
    "nan_policy", "model.attn_impl", "model.kernels", "model.remat", "mesh.data", "mesh.fsdp",
    "distributed", "distributed_timeout_s", "cpu_devices", "best_metric", "model.scan", "model.remat_policy",
)  # fmt: skip
RESUMABLE_PREFIXES = ("evals.",)  # what a run measures does not change what it trains


class CheckpointError(Error, ValueError):
    """A checkpoint that cannot be used (wrong architecture, truncated, different config)."""


class Checkpointer:
    """The run's checkpoints under `workdir/checkpoints` (and `workdir/best` with `keep_best`)."""

    def __init__(
        self, workdir: str, keep: int, async_save: bool = True, best: Optional[str] = None
    ):
        """`best`: the metric that chooses the one checkpoint kept in `workdir/best` (higher is
        better, except for a loss); None keeps no best checkpoint. A relative `workdir` is taken
        from the current directory (Orbax needs absolute paths); a URL must be gs://."""
        self.workdir, self.failed = workdir, False
        save_failure.mute_orbax_thread_errors()
        workdir = orbax_directory(workdir)
        opts = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True
        )
        self.manager = ocp.CheckpointManager(
            os.path.join(workdir, "checkpoints"), options=opts,
            item_handlers=ocp.StandardCheckpointHandler(),  # so item_metadata() works before restore
        )  # fmt: skip
        self.best = None
        if best is not None:
            best_opts = ocp.CheckpointManagerOptions(
                max_to_keep=1, best_fn=lambda m: m.get("score", m.get("top1")),  # "top1": older runs
                best_mode="min" if "loss" in best else "max", create=True,
                enable_async_checkpointing=async_save,
            )  # fmt: skip
            self.best = ocp.CheckpointManager(os.path.join(workdir, "best"), options=best_opts)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def restore(self, abstract_state, step: Optional[int] = None):
        """`restore_from(self.manager, step, abstract_state)`."""
        return restore_from(self.manager, step, abstract_state)

    def save(self, step: int, state, force: bool = False) -> None:
        """Saves `state` as `step` (in the background with async saves).

        Raises:
          CheckpointError (one line: workdir, step, cause, what to do) when this save or the
          previous background one failed; its temporary folder is removed first.
        """
        args = ocp.args.StandardSave(state)
        self._guarded(self.manager, step, lambda: self.manager.save(step, args=args, force=force))

    def save_best(self, step: int, state, score: float) -> None:
        if self.best is not None:
            args, metrics = ocp.args.StandardSave(state), {"score": float(score)}
            self._guarded(self.best, step, lambda: self.best.save(step, args=args, metrics=metrics))

    def close(self) -> None:
        """Waits for a background save (its failure: `save`'s CheckpointError) and closes. After a
        failed save it only closes, quietly: the run is already stopping with that error."""
        for m in (self.manager, self.best):
            if m is None:
                continue
            if self.failed:
                with contextlib.suppress(Exception):
                    m.close()
                continue
            self._guarded(m, None, m.wait_until_finished)
            m.close()

    def _guarded(self, manager: ocp.CheckpointManager, step: Optional[int], write: Callable):
        try:
            return write()
        except Exception as e:  # Orbax and TensorStore raise many types; the user needs one line.
            self.failed = True
            raise CheckpointError(
                save_failure.message(self.workdir, str(manager.directory), step, e)
            ) from None


def orbax_directory(path: str) -> str:
    """The directory Orbax is given for `path`: a local path made absolute (Orbax needs that), a
    gs:// URL as it is.

    Raises:
      CheckpointError for any other URL: Orbax writes the arrays with TensorStore, and builds its
      "gcs" kvstore for gs:// and its local "file" kvstore for everything else.
    """
    if not files.is_url(path):
        return os.path.abspath(path)
    if files.scheme(path) != "gs":
        raise CheckpointError(
            f"cannot keep checkpoints in {path}: Orbax writes checkpoints to local paths and gs:// "
            "only; use a gs:// or local --workdir"
        )
    return path


def _reader(directory: str) -> ocp.CheckpointManager:
    directory = orbax_directory(directory)
    return ocp.CheckpointManager(directory, item_handlers=ocp.StandardCheckpointHandler())


def restore_from(manager: ocp.CheckpointManager, step: Optional[int] = None, target=None):
    """Restores `step` (default: latest) of `manager`'s checkpoints.

    Args:
      manager: the Orbax manager of a `checkpoints/` (or `best/`) directory.
      step: the step; None for the latest.
      target: the state's structure as arrays or `jax.ShapeDtypeStruct`s (with shardings to restore
        sharded); None restores every saved array as a NumPy array on the host.

    The encoder blocks may be saved in the other layout than `target`'s (a run resumed with
    another `model.scan`): they are read as saved and converted (`vit_jax.models.scan`).

    Raises:
      CheckpointError (one line) when there is no checkpoint, or it does not fit `target`, or it is
      corrupt.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint in {manager.directory}")
    path = os.path.join(str(manager.directory), str(step))
    meta = _quietly(lambda: manager.item_metadata(step), path)
    if target is None:
        target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), dict(meta))
    saved = _shapes(meta)
    as_saved = _in_saved_layout(target, saved)
    _check_fits(saved, _shapes(as_saved), path)
    args = ocp.args.StandardRestore(as_saved)
    state = _quietly(lambda: manager.restore(step, args=args), path)
    if jax.tree.structure(as_saved) == jax.tree.structure(target):
        return state
    shardings = [getattr(x, "sharding", None) for x in jax.tree.leaves(target)]
    if any(s is None for s in shardings):  # host arrays
        return scan.match_layout(state, target)
    out = jax.tree.unflatten(jax.tree.structure(target), shardings)
    return jax.jit(lambda s: scan.match_layout(s, target), out_shardings=out)(state)


def _in_saved_layout(target, saved: Dict[str, tuple]):
    """`target` with each mapping of encoder blocks in the layout of the `saved` arrays there."""

    def convert(path, sub):
        if not scan.has_blocks(sub):
            return sub
        prefix = "".join(f"{_key_name(k)}." for k in path) + scan.BLOCK
        if any(k.startswith(prefix + ".") for k in saved):
            return scan.stack_blocks(sub)
        if any(k.startswith(prefix + "_0.") for k in saved):
            return scan.unstack_blocks(sub)
        return sub

    return jax.tree_util.tree_map_with_path(convert, target, is_leaf=scan.has_blocks)


def saved_steps(directory: str) -> List[int]:
    """The complete steps in a directory of Orbax steps (in-progress `N.orbax-checkpoint-tmp-*`
    folders are not digits), ascending; empty when the directory is absent."""
    directory = orbax_directory(directory)
    names = files.listdir(directory) if files.isdir(directory) else []
    return sorted(int(n) for n in names if n.isdigit())


def metadata(directory: str, step: int) -> Dict[str, Any]:
    """The saved state's structure at `step`, with each array's `.shape` and `.dtype` (no data)."""
    manager = _reader(directory)
    try:
        path = os.path.join(directory, str(step))
        return dict(_quietly(lambda: manager.item_metadata(step), path))
    finally:
        manager.close()


def restore(directory: str, step: Optional[int] = None, target=None):
    """`restore_from` for a directory of Orbax steps, e.g. `workdir/checkpoints`."""
    manager = _reader(directory)
    try:
        return restore_from(manager, step, target)
    finally:
        manager.close()


def _shapes(tree) -> Dict[str, tuple]:
    """{"params.Transformer.encoder_norm.scale": (16,), ...} of a state or its checkpoint metadata."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {".".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves}


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):  # DictKey, SequenceKey, GetAttrKey (optax namedtuples)
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _short(error: BaseException) -> str:
    """A short first line of an Orbax/TensorStore error (theirs go on to dump whole specs)."""
    return first_line(error).split(". ")[0][:300]  # the rest is a TensorStore spec or advice


def _check_fits(saved: Dict[str, tuple], wanted: Dict[str, tuple], path: str) -> None:
    """Compares array names and shapes with the checkpoint's metadata, before reading any data.

    A mismatch found by Orbax mid-restore gives a message without the array's name, so a
    different architecture is caught here instead.
    """
    diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if diff:
        k = next((k for k in diff if k.startswith("params.")), diff[0])
        shape = lambda s: "absent" if s is None else f"shape {s}"
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: {k} is {shape(saved.get(k))} in the "
            f"checkpoint, {shape(wanted.get(k))} in the model ({len(diff)} arrays differ); "
            "resume with the config the run was started with, or use a new --workdir"
        )


def _quietly(read: Callable[[], Any], path: str):
    """`read()`, an Orbax read of checkpoint `path`; its failure as one CheckpointError line.

    Orbax closes its event loop at the first failed read while sibling reads are still in flight;
    their late callbacks ("Event loop is closed"), abandoned coroutines and never-retrieved task
    errors would print hundreds of lines of tracebacks, so those are muted until they are done.
    """
    hook, log = sys.unraisablehook, logging.getLogger("asyncio")
    level = log.level
    sys.unraisablehook, log.level = (lambda _: None), logging.CRITICAL
    try:
        try:
            return read()
        except Exception as e:  # Orbax raises many types; the user needs one line.
            msg = _short(e)
        time.sleep(0.3)  # the failed read's siblings finish
        with warnings.catch_warnings():  # "coroutine ... was never awaited", same cause
            warnings.simplefilter("ignore", RuntimeWarning)
            gc.collect()
    finally:
        sys.unraisablehook, log.level = hook, level
    raise CheckpointError(
        f"cannot read checkpoint {path}: {msg}; it may be truncated or corrupt: delete {path} to "
        "resume from the checkpoint before it, or use a new --workdir"
    )


def effective(config_dict: Dict[str, Any]) -> Dict[str, Any]:
    """A run's config as flat `{key: value}` of what it trains, for comparing two runs.

    Keys a saved run lacks (added to the package since) take today's default; the model's size
    string is replaced by the sizes it means; a None eval_batch_size by batch_size; tuples by lists
    (as JSON has them). So a config that only changed how it is written compares equal.
    """
    name = config_dict.get("model_name", "vit")
    try:
        flat = trees.flatten(json.loads(config_lib.base_config(name).to_json()))
    except ValueError:  # an unknown family: compare as written
        flat = {}
    flat.update(trees.flatten(config_dict))
    model = {k[len("model.") :]: v for k, v in flat.items() if k.startswith("model.")}
    try:
        sizes = models.config_options(model, name)
        for key in models.families.get(name).size_keys:
            flat[f"model.{key}"] = sizes[key]
        flat.pop("model.variant")
    except ValueError:  # an invalid model: compare as written
        pass
    flat["eval_batch_size"] = flat.get("eval_batch_size") or flat.get("batch_size")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}


def check_config(workdir: str, config) -> bool:
    """Compares `config` with the run recorded in `workdir/config.json`.

    Returns:
      True when config.json should be (re)written: a fresh run, or an allowed change.

    Raises:
      CheckpointError naming the differing keys, unless `config.allow_config_change`.
    """
    path = files.join(workdir, "config.json")
    if not files.exists(path):
        return True
    try:
        saved = json.loads(files.read_text(path))
    except ValueError as e:
        raise CheckpointError(
            f"cannot read {path} ({e}); it records the run's config: restore it, or delete it "
            "to resume with the current config"
        ) from None
    old, new = effective(saved), effective(json.loads(config.to_json()))
    diff = sorted(
        k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_KEYS
        and not k.startswith(RESUMABLE_PREFIXES)
    )  # fmt: skip
    if diff and not config.allow_config_change:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
        more = f" and {len(diff) - 5} more" if len(diff) > 5 else ""
        raise CheckpointError(
            f"workdir {workdir} holds a run with a different config ({shown}{more}); use a new "
            "--workdir or pass --config.allow_config_change=True to resume anyway"
        )
    return bool(diff)


def write_config(workdir: str, config) -> None:
    """Writes `workdir/config.json` atomically (process 0 only)."""
    if jax.process_index() != 0:
        return
    with files.atomic_write(files.join(workdir, "config.json")) as f:
        json.dump(json.loads(config.to_json()), f, indent=2)


def check_or_write_config(workdir: str, config) -> None:
    """`check_config`, then `write_config` where needed."""
    if check_config(workdir, config):
        write_config(workdir, config)


__all__ = [
    "Checkpointer", "CheckpointError", "check_config", "check_or_write_config", "effective",
    "orbax_directory", "restore", "restore_from", "write_config",
]  # fmt: skip

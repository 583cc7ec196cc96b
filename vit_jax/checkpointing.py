"""Orbax checkpoints of the train state: save every N steps, keep the last K (+ best), auto-resume.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-write (even `kill -9` during an asynchronous save) leaves no step that `latest_step()` picks up.
"""

import json
import os
from typing import Any, Dict, Optional

import jax
import orbax.checkpoint as ocp

from vit_jax.config_validate import ConfigError

# Keys that may differ between the saved run and a resumed one without changing what is trained.
RESUMABLE_KEYS = (
    "total_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "keep_best",
    "async_checkpointing", "allow_config_change", "progress_bar", "prefetch", "eval_batch_size",
    "nan_policy", "model.attn_impl", "model.remat", "mesh.data", "mesh.fsdp", "distributed",
)  # fmt: skip


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (wrong architecture, truncated, different config)."""


class Checkpointer:
    """The run's checkpoints under `workdir/checkpoints` (and `workdir/best` with `keep_best`)."""

    def __init__(self, workdir: str, keep: int, async_save: bool = True, keep_best: bool = False):
        opts = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True
        )
        self.manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), options=opts)
        self.best = None
        if keep_best:
            best_opts = ocp.CheckpointManagerOptions(
                max_to_keep=1, best_fn=lambda m: m["top1"], best_mode="max", create=True,
                enable_async_checkpointing=async_save,
            )  # fmt: skip
            self.best = ocp.CheckpointManager(os.path.join(workdir, "best"), options=best_opts)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def restore(self, abstract_state, step: Optional[int] = None):
        """Restores `step` (default: latest) into the structure/shardings of `abstract_state`."""
        step = self.latest_step() if step is None else step
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        except Exception as e:  # Orbax raises many types; the user needs one line.
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"cannot restore checkpoint step {step} from {self.manager.directory}: {msg} "
                "(is it from a different model, or truncated? use a new --workdir)"
            ) from None

    def save(self, step: int, state, force: bool = False) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def save_best(self, step: int, state, top1: float) -> None:
        if self.best is not None:
            self.best.save(step, args=ocp.args.StandardSave(state), metrics={"top1": float(top1)})

    def close(self) -> None:
        for m in (self.manager, self.best):
            if m is not None:
                m.wait_until_finished()
                m.close()


def _flat(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def check_or_write_config(workdir: str, config) -> None:
    """Writes `workdir/config.json` on a fresh run; on resume refuses a different config.

    Raises:
      CheckpointError naming the differing keys, unless `config.allow_config_change`.
    """
    path = os.path.join(workdir, "config.json")
    current = json.loads(config.to_json())
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        old, new = _flat(saved), _flat(current)
        diff = sorted(
            k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_KEYS
        )
        if diff and not config.allow_config_change:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
            raise CheckpointError(
                f"workdir {workdir} holds a run with a different config ({shown}); use a new --workdir "
                "or pass --config.allow_config_change=True to resume anyway"
            )
        if not diff:
            return
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(current, f, indent=2)
        os.replace(tmp, path)


__all__ = ["Checkpointer", "CheckpointError", "ConfigError", "check_or_write_config"]

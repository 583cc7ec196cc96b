"""Checks at the start of a run that name a fault before it costs training (issue 26):

- `check_writable`: a workdir that cannot be written (read-only mount, permissions) is one line,
  not a TensorFlow PermissionDeniedError from the TensorBoard writer or an Orbax traceback;
- `check_dataset`: the dataset facts a run started with (class count and names, split sizes)
  are recorded in WORKDIR/dataset.json and compared on resume, so an image folder replaced by
  one with another class (same path, same config) is named as such, not as a head-shape
  mismatch of the checkpoint;
- `warn_free_space`: on a local disk, a `warning:` when the free space cannot hold
  keep_checkpoints + 1 checkpoints (one is written before the oldest is deleted), a checkpoint
  estimated as the bytes of the train state.
"""

import errno
import json
import os
import shutil
import uuid
from typing import Callable, Dict, Optional

import jax

from vit_jax.common import files
from vit_jax.common.errors import Error

FACTS_FILE = "dataset.json"


class WorkdirError(Error, OSError):
    """The workdir cannot be written."""


class DatasetChangedError(Error, ValueError):
    """The dataset under a resumed run's dataset string is not the one it started with."""


def check_writable(workdir: str) -> None:
    """Creates `workdir` if needed and writes (then removes) a probe file in it."""
    if files.is_url(workdir):
        return  # object stores: the first write says it (no cheap probe without a cost)
    probe = os.path.join(workdir, f".write-probe-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(workdir, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        why = {errno.EROFS: "a read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.ENOSPC: "no space left on the device"}  # fmt: skip
        raise WorkdirError(
            f"cannot write to the workdir {workdir} ({why.get(e.errno, e.strerror or str(e))}); "
            "make it writable, or copy the run to a writable --workdir"
        ) from None


def facts(config, info, eval_info=None) -> Dict:
    """The dataset facts recorded for a run: what its labels and sizes mean."""
    out = {
        "dataset": config.dataset,
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "train_examples": info.num_examples,
    }
    if eval_info is not None:
        out["eval_examples"] = eval_info.num_examples
    return out


def _changes(old: Dict, new: Dict):
    if old.get("num_classes") != new["num_classes"] or old.get("class_names") != new["class_names"]:
        added = [c for c in new["class_names"] if c not in old.get("class_names", [])]
        gone = [c for c in old.get("class_names", []) if c not in new["class_names"]]
        detail = ", ".join(
            [f"new: {', '.join(added[:5])}"] * bool(added) + [f"gone: {', '.join(gone[:5])}"] * bool(gone)
        ) or "renamed or reordered"  # fmt: skip
        yield f"classes {old.get('num_classes')} -> {new['num_classes']} ({detail})"
    for key, label in (("train_examples", "train examples"), ("eval_examples", "eval examples")):
        if key in old and key in new and old[key] != new[key]:
            yield f"{label} {old[key]} -> {new[key]}"


def check_dataset(workdir: str, new: Dict, resuming: bool, allow_change: bool) -> bool:
    """Compares `new` facts with the recorded ones when resuming. Returns True when the record
    should be (re)written (after the restore succeeds, as config.json).

    Raises:
      DatasetChangedError naming what changed, unless `allow_change`.
    """
    path = files.join(workdir, FACTS_FILE)
    if not resuming or not files.exists(path):
        return True
    try:
        old = json.loads(files.read_text(path))
    except ValueError:
        return True  # a damaged record says nothing; the checkpoint check still runs
    changes = list(_changes(old, new))
    if changes and not allow_change:
        raise DatasetChangedError(
            f"the dataset {new['dataset']} changed since the run in {workdir} started: "
            f"{'; '.join(changes)}; restore the data it was trained on, or use a new --workdir "
            "(--config.allow_config_change=True resumes anyway if the class count is unchanged)"
        )
    return bool(changes) or old != new


def write_facts(workdir: str, new: Dict) -> None:
    if jax.process_index() == 0:
        with files.atomic_write(files.join(workdir, FACTS_FILE)) as f:
            json.dump(new, f, indent=2)


def state_bytes(abstract) -> int:
    """Bytes of every array of the (abstract) train state: about a checkpoint's size."""
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract)))


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def warn_free_space(workdir: str, abstract, keep: int, existing: int = 0,
                    say: Callable[[str], None] = print) -> Optional[str]:  # fmt: skip
    """Warns when a local `workdir` cannot hold keep + 1 checkpoints (`existing` already there).
    Returns the warning (None when there is room, or for a URL)."""
    if files.is_url(workdir) or jax.process_index() != 0:
        return None
    one = state_bytes(abstract)
    free = shutil.disk_usage(workdir).free
    needed = max(keep + 1 - existing, 0) * one
    if free >= needed:
        return None
    line = (
        f"warning: {workdir} has {_size(free)} free, less than the {_size(needed)} that "
        f"keep_checkpoints={keep} needs ({keep + 1} checkpoints of ~{_size(one)}, one written "
        "before the oldest is deleted); a save will fail when the disk fills: free space or "
        "lower keep_checkpoints"
    )
    say(line)
    return line

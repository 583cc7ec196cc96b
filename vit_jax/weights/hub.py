"""Where a `.safetensors` checkpoint lives: a file, a folder holding one, or `hf://ORG/NAME[@REV]`
in the local Hugging Face hub cache, resolved offline (we never download).

The cache is `huggingface_hub`'s layout: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
`~/.cache/huggingface/hub`, holding `models--ORG--NAME/refs/<rev>` (a file with a commit hash),
`snapshots/<hash>/<files>` (symlinks into `blobs/`). `@REV` is a branch or tag name under `refs/`
(default `main`) or a commit hash. `HF_HUB_OFFLINE` changes nothing here: every look-up is offline.
"""

import dataclasses
import json
import os
from typing import Any, Dict, Optional

SCHEME = "hf://"
WEIGHTS = ("model.safetensors", "open_clip_model.safetensors")


@dataclasses.dataclass(frozen=True)
class Located:
    """A checkpoint's weights file and the JSON files beside it (None: absent)."""

    weights: str
    config: Optional[Dict[str, Any]]
    preprocessor: Optional[Dict[str, Any]]
    source: str  # what the user named


def cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def is_safetensors(path: str) -> bool:
    """Whether `path` names a checkpoint this module locates."""
    return (
        path.startswith(SCHEME)
        or path.endswith(".safetensors")
        or (os.path.isdir(path) and any(os.path.isfile(os.path.join(path, w)) for w in WEIGHTS))
    )


def snapshot(name: str) -> str:
    """The snapshot folder of `hf://ORG/NAME[@REV]` in the local cache.

    Raises:
      ValueError: one line saying where it looked and how to fetch the model elsewhere.
    """
    repo, _, rev = name[len(SCHEME) :].partition("@")
    rev = rev or "main"
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"{name}: expected hf://ORG/NAME or hf://ORG/NAME@REVISION")
    root = os.path.join(cache_dir(), "models--" + repo.replace("/", "--"))
    ref = os.path.join(root, "refs", rev)
    commit = open(ref).read().strip() if os.path.isfile(ref) else rev
    folder = os.path.join(root, "snapshots", commit)
    if not os.path.isdir(folder):
        where = ref if os.path.isdir(root) else root
        raise ValueError(
            f"{name} is not in the local Hugging Face cache (looked for {where}; cache "
            f"{cache_dir()}, set by HF_HUB_CACHE or HF_HOME); on a machine with network run "
            f"`huggingface-cli download {repo}{'' if rev == 'main' else ' --revision ' + rev}` "
            "and copy the cache here"
        )
    return folder


def _json(path: str) -> Optional[Dict[str, Any]]:
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None


def locate(path: str) -> Located:
    """The weights file and configs of `path` (a file, a folder or `hf://...`)."""
    folder = snapshot(path) if path.startswith(SCHEME) else path
    if os.path.isdir(folder):
        found = [
            os.path.join(folder, w) for w in WEIGHTS if os.path.isfile(os.path.join(folder, w))
        ]
        if not found:
            raise ValueError(
                f"no {' or '.join(WEIGHTS)} in {folder}"
                + (" (a sharded checkpoint is not supported)" if _sharded(folder) else "")
            )
        weights = found[0]
    elif os.path.isfile(folder):
        weights, folder = folder, os.path.dirname(folder) or "."
    else:
        raise ValueError(f"checkpoint {path} does not exist")
    return Located(
        weights=weights,
        config=_json(os.path.join(folder, "config.json")),
        preprocessor=_json(os.path.join(folder, "preprocessor_config.json")),
        source=path,
    )


def _sharded(folder: str) -> bool:
    return any(n.endswith(".safetensors.index.json") for n in os.listdir(folder))

"""Nested mappings (dicts, ConfigDicts, parameter trees) as flat `{joined key: leaf}` dicts."""

from typing import Any, Dict


def flatten(tree, sep: str = ".", prefix: str = "") -> Dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}; anything with `.items()` is descended into."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            out.update(flatten(value, sep, name + sep))
        else:
            out[name] = value
    return out

"""A tiny name → object registry, so every scheme (posemb, norm, pool, head) is found by name."""

from typing import Any, Callable, Dict


class Registry:
    """Maps names to objects; unknown names raise a one-line error listing the choices."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator registering `obj` under `name`."""

        def wrap(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return wrap

    def get(self, name: str) -> Any:
        """Returns the entry called `name`."""
        if name not in self._entries:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            )
        return self._entries[name]

    def names(self):
        return tuple(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

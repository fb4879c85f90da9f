"""One registry type for every name-or-object choice (encoders, losses, shrinkage, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping whose unknown-name error lists the valid names.

    Parameters
    ----------
    kind : str
        What the registry holds, used in error messages (e.g. ``"encoder"``).

    Examples
    --------
    >>> losses = Registry("loss")
    >>> @losses.register("ce")
    ... def cross_entropy(): ...
    >>> losses.get("ce") is cross_entropy
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that stores the decorated object under ``name``."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        """Store ``obj`` under ``name``; a name may be registered only once."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """Return the object registered under ``name``.

        Raises
        ------
        ValueError
            If ``name`` is unknown; the message lists the valid names.
        """
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} must be given by name (str), got {type(name).__name__}")
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items))
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

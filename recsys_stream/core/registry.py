"""One registry type for every kind of model: names to classes, each name registered once.

After PyTorch-BigGraph's ``PluginRegistry``: a kind's models module makes one
``Registry`` and decorates each model class with its ``register``; the rest
of the code reads it as a mapping (``name in models``, ``models[name]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Mapping[str, T], Generic[T]):
    """The classes of one kind of model (``what``, for messages), by their ``name``."""

    def __init__(self, what: str):
        self.what = what
        self._classes: dict[str, T] = {}

    def register(self, cls: T) -> T:
        """Class decorator: make ``cls`` trainable as ``--model cls.name``; a name taken
        twice is a programming error, refused at import."""
        name = cls.name
        if name in self._classes:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._classes[name] = cls
        return cls

    def __getitem__(self, name: str) -> T:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

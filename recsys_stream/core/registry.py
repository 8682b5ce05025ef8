"""One registry type for models and tasks: names to classes, each name registered once.

After PyTorch-BigGraph's ``PluginRegistry``: a kind's models module makes one
``Registry`` and decorates each model class with its ``register``, as each kind
registers its task class (``core.tasks.TASKS``); the rest of the code reads a
registry as a mapping (``name in models``, ``models[name]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Mapping[str, T], Generic[T]):
    """Classes of one sort (``what``, for messages), by their ``key`` attribute: a model's
    ``name``, a task's ``kind``."""

    def __init__(self, what: str, key: str = "name"):
        self.what, self.key = what, key
        self._classes: dict[str, T] = {}

    def register(self, cls: T) -> T:
        """Class decorator: make ``cls`` known by its key (a model trainable as ``--model
        cls.name``); a key taken twice is a programming error, refused at import."""
        name = getattr(cls, self.key)
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

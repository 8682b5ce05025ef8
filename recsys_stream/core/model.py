"""What every model of every kind is: a torch module with sparse tables and dense rest.

The kinds' protocols (``PairModel``, ``RatingModel``, ``SequenceModel``) extend
:class:`Model`: each names itself for its registry, says which of its
embedding tables are sparse (the lazy Adam updates only the rows a batch
touches) and, when its score has a closed form, gives the fused step its
layout. Everything else is dense and trained by AdamW.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn


class Model(nn.Module):
    """The part of the model protocol every kind shares; see the module doc."""

    name: ClassVar[str]  # the --model name it registers under
    help: ClassVar[str]  # one line for --help

    def tables(self) -> dict[str, nn.Embedding]:
        """The sparse embedding tables, by name."""
        raise NotImplementedError

    def dense(self) -> dict[str, nn.Parameter]:
        """The parameters outside the sparse tables, by name."""
        sparse = {id(table.weight) for table in self.tables().values()}
        return {n: p for n, p in self.named_parameters() if id(p) not in sparse}

    def layout(self):
        """The closed form the kind's fused step trains, or None when the model has none
        (it then trains through autograd)."""
        return None

    @classmethod
    def has_layout(cls) -> bool:
        """Whether the class gives the fused step a layout, asked without an instance."""
        return cls.layout is not Model.layout

"""The one registry type every kind of model registers in."""

from __future__ import annotations

import pytest

from recsys_stream.core.config import KINDS
from recsys_stream.core.registry import Registry
from recsys_stream.core.tasks import TASKS, task_class
from recsys_stream.pairs.models import MODELS
from recsys_stream.ratings.models import RATING_MODELS
from recsys_stream.sequences.models import SEQUENCE_MODELS


def test_a_name_registers_once_and_reads_as_a_mapping():
    models = Registry("toy model")

    @models.register
    class Toy:
        name = "toy"

    assert models["toy"] is Toy and "toy" in models and list(models) == ["toy"]
    with pytest.raises(ValueError, match=r"^toy model 'toy' is registered twice$"):
        models.register(type("Other", (), {"name": "toy"}))
    with pytest.raises(KeyError):
        models["other"]


def test_each_kind_registers_its_models_by_their_names():
    assert set(MODELS) == {"mf", "mf_bias", "mf_two_tables", "skipgram"}
    assert set(RATING_MODELS) == {
        "mf",
        "mf_bias",
        "pmf",
        "embedding_net",
        "svdpp",
        "bpmf",
        "bpmf_svdpp",
    }
    assert set(SEQUENCE_MODELS) == {"lstm", "gru", "sasrec"}
    for registry in (MODELS, RATING_MODELS, SEQUENCE_MODELS):
        assert all(registry[name].name == name for name in registry)


def test_each_kind_of_task_registers_its_class_with_a_headline():
    classes = {kind: task_class(kind) for kind in KINDS}
    assert set(TASKS) == set(KINDS) == {"pairs", "ratings", "sequences", "next-item"}
    for kind, cls in classes.items():
        assert cls.kind == kind and cls.headline and cls.monitor in cls.metrics

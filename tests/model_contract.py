"""The contract every registered model meets, whatever its kind.

A test class per kind inherits :class:`ModelContract`, names its kind, the
stream classes its task reads and fast settings, and gives its dataset as the
``dataset`` fixture; ``conftest.pytest_generate_tests`` then runs each test
below for every model the kind's registry holds (``variants``), so a new model
gets these tests by registering, as implicit's ``RecommenderBaseTestMixin``
does for its models:

- save and load: the loaded model is the registered class of the run's kind,
  with model.pt's weights bit for bit, in eval mode, without gradients;
- resume: a run interrupted at the start of epoch 2 and resumed ends with the
  weights, learning curve and headline metrics of one trained straight;
- determinism: the same seed gives the same weights, another seed others;
- the steps: a model with a layout trains with the compiled kernel and with the
  torch fused step as with its autograd step; one without is refused ``--step
  kernel`` and ``--step fused`` in one line.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch

from pipeline.errors import PipelineError
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.tasks import task_class
from recsys_stream.core.train import train
from recsys_stream.core.trained import load_run


class ModelContract:
    kind: str  # the kind of task whose registry is checked
    streams: tuple[type, ...]  # the stream classes its task reads
    fused_tolerance = 1e-4  # the headline metrics of a compiled step and autograd, one epoch

    @classmethod
    def variants(cls) -> list[str]:
        """What ``model`` runs over: every model the kind registers."""
        return sorted(task_class(cls.kind).models)

    def settings(self, model: str, **values) -> TrainConfig:
        """Fast settings of the variant ``model`` on this kind's dataset."""
        raise NotImplementedError

    def trained(self, dataset: Path, name: str, config: TrainConfig, **options) -> dict:
        return train(dataset, config, name=name, quiet=True, threads=1, **options)

    def test_save_and_load_round_trip_bit_for_bit(self, dataset, model):
        config = self.settings(model, epochs=1)
        self.trained(dataset, f"saved-{model}", config)
        loaded = load_run(dataset / "runs" / f"saved-{model}")
        registered = task_class(self.kind).models[config.model]
        assert loaded.kind == self.kind and type(loaded.model) is registered
        assert loaded.config == config and not loaded.model.training
        state = loaded.model.state_dict()
        assert state.keys() == loaded.saved["state_dict"].keys()
        assert all(torch.equal(state[name], v) for name, v in loaded.saved["state_dict"].items())
        assert not any(p.grad is not None for p in loaded.model.parameters())

    def test_resume_after_interruption_is_bit_identical(self, dataset, model, monkeypatch):
        config = self.settings(model, epochs=3)
        whole = self.trained(dataset, f"whole-{model}", config)
        real = {cls: cls.__iter__ for cls in self.streams}

        def interrupted(stream):
            if stream.epoch == 1:
                raise KeyboardInterrupt
            return real[type(stream)](stream)

        for cls in self.streams:
            monkeypatch.setattr(cls, "__iter__", interrupted)
        with pytest.raises(KeyboardInterrupt):
            self.trained(dataset, f"resumed-{model}", config)
        for cls in self.streams:
            monkeypatch.setattr(cls, "__iter__", real[cls])
        resumed = self.trained(dataset, f"resumed-{model}", config, resume=True)
        assert (whole["parts"], resumed["parts"]) == (1, 2)
        assert weights(dataset, f"whole-{model}") == weights(dataset, f"resumed-{model}")
        assert curve(dataset, f"whole-{model}") == curve(dataset, f"resumed-{model}")
        for key in (*task_class(self.kind).headline, "steps"):
            assert resumed.get(key) == whole.get(key), key

    def test_same_seed_same_weights_another_seed_others(self, dataset, model):
        for name, seed in (("a", 7), ("b", 7), ("c", 8)):
            self.trained(dataset, f"seed-{name}-{model}", self.settings(model, epochs=1, seed=seed))
        a, b, c = (weights(dataset, f"seed-{name}-{model}") for name in "abc")
        assert a == b and a != c

    def test_the_compiled_steps_train_as_autograd_does(self, dataset, model):
        config = self.settings(model, epochs=1, step="autograd")
        autograd = self.trained(dataset, f"autograd-{model}", config)
        laid_out = load_run(dataset / "runs" / f"autograd-{model}").model.layout() is not None
        for step in ("kernel", "fused"):
            compiled_config = dataclasses.replace(config, step=step)
            if not laid_out:
                refusal = rf"has no {step} step; use --step autograd$"
                with pytest.raises(PipelineError, match=refusal):
                    self.trained(dataset, f"{step}-{model}", compiled_config)
                continue
            compiled = self.trained(dataset, f"{step}-{model}", compiled_config)
            for key in task_class(self.kind).headline:
                if isinstance(compiled.get(key), float):
                    expected = pytest.approx(autograd[key], abs=self.fused_tolerance)
                    assert compiled[key] == expected, (step, key)


def weights(dataset: Path, name: str) -> list[bytes]:
    """A run's weights, as bytes in state-dict order."""
    state = load_run(dataset / "runs" / name).model.state_dict()
    return [value.numpy().tobytes() for value in state.values()]


def curve(dataset: Path, name: str) -> list[dict]:
    """metrics.csv without its timings (samples/s, threads): the same for equal runs."""
    with open(dataset / "runs" / name / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return [{k: v for k, v in row.items() if k not in ("samples_per_s", "threads")} for row in rows]

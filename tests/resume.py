"""What the resume tests of every task share: train, interrupt, resume, compare."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recsys_stream.core.train import train
from recsys_stream.core.trained import load_run


def assert_resume_is_bit_identical(folder: Path, settings, stream_class, monkeypatch) -> tuple:
    """Train ``settings`` straight, then again interrupted at the start of epoch 2
    (``stream_class``' iterator raises) and resumed; assert the two models' weights
    are equal bit for bit. Returns (straight, resumed) summaries."""
    straight = train(folder, settings, name="straight", quiet=True)
    real = stream_class.__iter__

    def interrupted(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(stream_class, "__iter__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(folder, settings, name="parts", quiet=True)
    monkeypatch.setattr(stream_class, "__iter__", real)
    resumed = train(folder, settings, name="parts", resume=True, quiet=True)
    assert resumed["parts"] == 2
    first, second = (load_run(folder / "runs" / n)[0] for n in ("straight", "parts"))
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    return straight, resumed

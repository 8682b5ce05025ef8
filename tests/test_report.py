"""The report: what its text says about the runs."""

from __future__ import annotations

import pytest
from planted import write_planted

from recsys_stream.config import TrainConfig
from recsys_stream.report import report
from recsys_stream.train import train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    data = write_planted(tmp_path_factory.mktemp("report"), products=600, pairs=5000)
    train(data, TrainConfig(epochs=1, batch_size=256, eval_every=10), name="only", quiet=True)
    return data


def test_the_report_names_the_negative_protocol(dataset):
    text = report(dataset, quiet=True).read_text()
    assert "| only |" in text
    assert "`products`: drawn from the distinct val products, each equally likely" in text

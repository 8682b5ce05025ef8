"""The report: what its text says against the runs' files, and what its figures hold."""

from __future__ import annotations

import json

import pytest
from planted import write_planted

from pipeline.files import write_json
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.train import train
from recsys_stream.pairs import figures as report_module
from recsys_stream.pairs import stream as stream_module
from recsys_stream.pairs.figures import learning_curves, precision_recall, roc
from recsys_stream.pairs.stream import PairStream
from recsys_stream.report import finished_runs, report

FAST = dict(batch_size=256, eval_sample=1000)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    data = write_planted(tmp_path_factory.mktemp("report"), products=600, pairs=5000)
    write_json(
        data / "parse.json",
        {
            "raw": "/data/meta_Digital_Music.json.gz",
            "raw_bytes": 1234567,
            "format": "py",
            "raw_sha256": "ab12cd34ef56" + "0" * 52,
            "lines": 10,
            "products": 10,
        },
    )
    train(data, TrainConfig(epochs=2, **FAST), name="plain", quiet=True)
    train(
        data,
        TrainConfig(model="mf", labels="binary", dim=8, epochs=2, **FAST),
        name="small",
        quiet=True,
    )
    return data


def lines_of(data) -> list[str]:
    return report(data, quiet=True).read_text().splitlines()


def test_the_header_names_the_raw_file(dataset):
    text = "\n".join(lines_of(dataset))
    assert text.startswith(f"# {dataset.name}: recsys-stream report")
    assert (
        "Raw file `/data/meta_Digital_Music.json.gz` (1,234,567 bytes, SHA-256 ab12cd34ef56…, "
        "format py)." in text
    )


def test_each_run_has_its_results_and_settings(dataset):
    lines = lines_of(dataset)
    summaries = {
        name: json.loads((dataset / "runs" / name / "summary.json").read_text())
        for name in ("plain", "small")
    }
    for name, s in summaries.items():
        row = next(line for line in lines if line.startswith(f"| {name} | 0."))
        cold = "–" if s["auc_cold"] is None else f"{s['auc_cold']:.4f}"
        assert f"| {s['auc_all']:.4f} | {s['auc_seen']:.4f} | {cold} | {s['pr_auc']:.4f} |" in row
    assert "| plain | epochs 2, batch-size 256, eval-sample 1000 | products | 42 |" in lines
    assert (
        "| small | model mf, labels binary, epochs 2, dim 8, negatives 5, batch-size 256, "
        "smoothing 0.9, eval-sample 1000 | products | 42 |" in lines
    )
    assert any("`products`: drawn from the distinct val products" in line for line in lines)


def test_a_resumed_run_shows_its_time_summed_over_its_parts(tmp_path, monkeypatch):
    data = write_planted(tmp_path, products=600, pairs=5000)
    config = TrainConfig(epochs=2, **FAST)
    real_iter = PairStream.__iter__

    def interrupted(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real_iter(self)

    monkeypatch.setattr(stream_module.PairStream, "__iter__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(data, config, name="resumed", quiet=True)
    monkeypatch.setattr(stream_module.PairStream, "__iter__", real_iter)
    summary = train(data, config, name="resumed", resume=True, quiet=True)
    assert summary["parts"] == 2 and summary["seconds"] > summary["seconds_last_part"]
    row = next(line for line in lines_of(data) if line.startswith("| resumed | 0."))
    assert f"| 2 | {summary['seconds']:.1f} (2 parts) |" in row


def test_a_single_run_gets_a_whole_report(tmp_path):
    data = write_planted(tmp_path, products=600, pairs=5000)
    train(data, TrainConfig(epochs=1, **FAST), name="alone", quiet=True)
    lines = lines_of(data)
    assert "No parse.json in" in lines[2]  # no stage stats: said, not a crash
    assert sum(line.startswith("| alone |") for line in lines) == 2  # results and settings
    for name in ("learning_curves", "precision_recall", "roc"):
        assert (data / "figures" / f"{name}.png").stat().st_size > 10_000


def test_learning_curves_hold_auc_loss_epochs_and_popularity(dataset):
    runs = finished_runs(dataset)
    figure = learning_curves(runs)
    auc, loss = figure.axes
    assert (auc.get_ylabel(), loss.get_ylabel(), loss.get_xlabel()) == (
        "ROC-AUC (val sample)",
        "training loss",
        "step",
    )
    labels = [text.get_text() for text in auc.get_legend().get_texts()]
    popularity = runs["plain"]["summary"]["popularity_auc"]
    assert labels == [
        "epoch boundary",
        f"popularity ({popularity:.3f})",
        "plain",
        "small",
        "seen pairs only",
    ]
    plain = next(line for line in auc.get_lines() if line.get_label() == "plain")
    steps = list(plain.get_xdata())
    assert steps[0] == 0 and len(steps) == 1 + 2 * 10  # step 0, then ten points an epoch
    assert len(set(steps)) == len(steps)
    boundaries = [
        line
        for line in auc.get_lines()
        if line.get_linestyle() == ":" and len(line.get_xdata()) == 2
    ]
    assert len(boundaries) == 1  # between the two epochs, drawn once
    report_module.plt.close(figure)


def test_precision_recall_and_roc_figures(dataset):
    runs = finished_runs(dataset)
    figure = precision_recall(runs)
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["plain", "small"]
    assert visible[0].get_ylabel() == "precision / recall"
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["precision", "recall"]
    assert all(any(t.get_text().startswith("P = R = ") for t in ax.texts) for ax in visible)
    kept = [r for r in runs["plain"]["pr"] if r["predicted"] >= report_module.MIN_PREDICTED]
    assert len(visible[0].get_lines()[0].get_xdata()) == len(kept)
    report_module.plt.close(figure)
    figure = roc(runs)
    (ax,) = figure.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-1].startswith("popularity (") and labels[0].startswith("plain (")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("false positive rate", "true positive rate")
    report_module.plt.close(figure)

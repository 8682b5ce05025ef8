"""DIR/report.md with its figures, from the stage stats and the runs' files.

(This is the report of product pairs; a ratings dataset's report is
:mod:`recsys_stream.ratings.report`'s.)

The report names the raw file it is about, tabulates the stages, the runs'
results and each run's settings (what differs from the defaults), and shows
three figures, each with a line saying what to look for: learning curves
(validation AUC and training loss against step, epoch boundaries and the
popularity baseline marked), precision and recall against threshold (the
reference's "cliff" figures), and the ROC curves with popularity's. It is
built from whatever finished runs the directory holds that were trained on
its current stage files: a run whose stages were rerun since
(:mod:`recsys_stream.core.lineage`) is left out of the tables and figures, with
a note naming it and what changed. The figure functions return matplotlib
figures, which the tests inspect.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import os
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from pipeline.contracts import PAIRS_STATS, PARSE_STATS, SPLIT_STATS, WALKS_STATS
from pipeline.errors import PipelineError
from pipeline.files import atomic_output, clear_stale_temporaries
from recsys_stream.core import lineage, runs
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.tasks import dataset_kind

FIGURES = "figures"
MIN_PREDICTED = 100  # thresholds predicting fewer pairs are left out of the P/R figure
PROTOCOLS = {
    "products": "drawn from the distinct val products, each equally likely (the reference "
    "article's protocol): popularity alone tells many of them from true pairs",
    "occurrences": "drawn from the val products in proportion to how often they occur in "
    "val pairs, so they share the positives' popularity: popularity alone scores about 0.5, "
    "and only what a model knows beyond popularity counts",
}


def report(
    data_dir: str | os.PathLike,
    quiet: bool = False,
    note: Callable[[str], object] | None = None,
) -> Path:
    """Write ``data_dir/report.md`` and ``data_dir/figures/*.png``; return the report's path.

    ``note`` is called with each note of a run left out (for the command line
    to print); the report holds them too.
    """
    data_dir = Path(data_dir)
    variants, left_out = current_runs(data_dir, finished_runs(data_dir))
    figures = data_dir / FIGURES
    figures.mkdir(exist_ok=True)
    for folder in (data_dir, figures):
        clear_stale_temporaries(folder)
    if dataset_kind(data_dir) == "ratings":
        from recsys_stream.ratings.report import rating_report

        lines = rating_report(data_dir, variants, figures, left_out)
    else:
        lines = _pair_report(data_dir, variants, figures, left_out)
    out = data_dir / "report.md"
    with atomic_output(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    if note:
        for line in left_out:
            note(line)
    return out


def _pair_report(
    data_dir: Path, variants: dict[str, dict], figures: Path, left_out: list[str]
) -> list[str]:
    sections = [
        (
            "Learning curves",
            learning_curves(variants),
            "learning_curves.png",
            "Validation ROC-AUC on a fixed sample of val pairs (solid: all, dashed: pairs whose "
            "products are both in train) and training loss, ten points an epoch from the "
            "untrained model at step 0. Look for the curves rising above the popularity line "
            "and flattening by the last epoch; a curve still climbing wants more epochs, one "
            "that falls late overfits.",
        ),
        (
            "Precision and recall against threshold",
            precision_recall(variants),
            "precision_recall.png",
            "Predicting a pair when the model's probability is at least the threshold. "
            f"Thresholds that predict fewer than {MIN_PREDICTED} pairs are left out (their "
            "precision is noise). Look for where precision meets recall (marked): MF without "
            "bias piles its scores near 0.5, the cliff the article describes, where precision "
            "and recall change all at once.",
        ),
        (
            "ROC curves",
            roc(variants),
            "roc.png",
            "True against false positive rate over all val pairs, with the popularity "
            "baseline. The further a curve bows towards the top left, the better; under the "
            "`products` protocol popularity alone bows far.",
        ),
    ]
    lines = [*_header(data_dir), "", "## Stages", "", *_stage_table(data_dir)]
    lines += left_out_lines(left_out)
    lines += ["", "## Models", "", *_variant_table(variants), "", *_protocol_note(variants)]
    lines += ["", "## Settings", "", *_settings_table(variants)]
    for title, figure, name, caption in sections:
        save(figure, figures / name)
        lines += ["", f"## {title}", "", f"![{title}]({FIGURES}/{name})", "", caption]
    return lines


def finished_runs(data_dir: Path) -> dict[str, dict]:
    """Finished runs by name, each with its summary and its curves' rows."""
    found = {}
    for summary in sorted((data_dir / "runs").glob(f"*/{runs.SUMMARY}")):
        run = summary.parent
        found[run.name] = {
            "summary": json.loads(summary.read_text()),
            "metrics": _csv(run / runs.METRICS),
            "pr": _csv(run / runs.PR),
            "roc": _csv(run / runs.ROC),
            "popularity_roc": _csv(run / runs.POPULARITY_ROC),
            "predictions": _csv(run / runs.PREDICTIONS),
        }
    return found


def current_runs(data_dir: Path, found: dict[str, dict]) -> tuple[dict[str, dict], list[str]]:
    """The runs of ``found`` trained on the current stage files, and a note for each other.

    Refuses, in one line, a directory without a finished run or whose every
    run was trained on stage files rerun since.
    """
    folder = data_dir / "runs"
    if not found:
        raise PipelineError(f"{folder}: no finished run (train one first)")
    stale = {name: lineage.change(folder / name) for name in found}
    stale = {name: change for name, change in stale.items() if change}
    if len(stale) == len(found):
        every = "; ".join(
            f"{name} {change} ({change.steps('its training')})" for name, change in stale.items()
        )
        raise PipelineError(f"{folder}: every run was trained on stage files rerun since: {every}")
    notes = [
        f"run {name} left out: {change} ({change.steps('its training')})"
        for name, change in stale.items()
    ]
    return {name: run for name, run in found.items() if name not in stale}, notes


def left_out_lines(notes: list[str]) -> list[str]:
    """The report's notes of the runs left out, a list item each."""
    return ["", *(f"- {note}" for note in notes)] if notes else []


def _csv(path: Path) -> list[dict[str, float | None]]:
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        return [
            {k: float(v) if v not in ("", "nan", "None") else None for k, v in row.items()}
            for row in csv.DictReader(file)
        ]


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _header(data_dir: Path) -> list[str]:
    """The title: which raw file the report is about, and when it was made."""
    parse = _stats(data_dir / PARSE_STATS)
    made = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [f"# {data_dir.name}: recsys-stream report", ""]
    if parse.get("raw"):
        size = parse.get("raw_bytes")
        digest = parse.get("raw_sha256", "")[:12]
        lines.append(
            f"Raw file `{parse['raw']}` ({_fmt(size)} bytes, SHA-256 {digest or '–'}…, "
            f"format {parse.get('format', '–')}). Report made {made}."
        )
    else:
        lines.append(f"No parse.json in {data_dir}: the raw file is unknown. Report made {made}.")
    return lines


def _stats(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _stage_table(data_dir: Path) -> list[str]:
    parse, pairs, split = (_stats(data_dir / n) for n in (PARSE_STATS, PAIRS_STATS, SPLIT_STATS))
    rows = [
        (
            "parse",
            f"{_fmt(parse.get('lines'))} lines → {_fmt(parse.get('products'))} products, "
            f"{_fmt(parse.get('duplicates'))} duplicates, {_fmt(parse.get('rejected'))} rejected",
            parse,
        ),
        (
            "pairs",
            f"{_fmt(pairs.get('pairs'))} pairs over a vocabulary of "
            f"{_fmt(pairs.get('vocabulary'))}",
            pairs,
        ),
        (
            "split",
            f"{_fmt(split.get('train'))} train, {_fmt(split.get('val_positives'))} val "
            f"positives + {_fmt(split.get('val_negatives'))} negatives "
            f"(`{split.get('negatives', '–')}` protocol)",
            split,
        ),
    ]
    walked = _stats(data_dir / WALKS_STATS)
    if walked:  # made only for skip-gram
        kind = "weighted" if walked.get("weighted") else "uniform"
        text = (
            f"{_fmt(walked.get('walks'))} {kind} walks of {walked.get('length')}, "
            f"{_fmt(walked.get('steps'))} steps"
        )
        rows.append(("walks", text, walked))
    return stage_table(rows)


def stage_table(rows: list[tuple[str, str, dict]]) -> list[str]:
    """A markdown table of (stage, what it made, its stats), with seconds and peak RSS."""
    table = ["| stage | result | seconds | peak RSS (MiB) |", "|---|---|---:|---:|"]
    for stage, text, values in rows:
        table.append(
            f"| {stage} | {text} | {_fmt(values.get('seconds'), 1)} | "
            f"{_fmt(values.get('peak_rss_mb'), 0)} |"
        )
    return table


def _variant_table(variants: dict[str, dict]) -> list[str]:
    table = [
        "| run | AUC all | AUC seen | AUC cold | PR-AUC | popularity AUC all "
        "| popularity AUC seen | popularity AUC cold | epochs | seconds | samples/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in variants.items():
        s = run["summary"]
        parts = s.get("parts", 1)
        seconds = _fmt(s["seconds"], 1) + (f" ({parts} parts)" if parts > 1 else "")
        table.append(
            f"| {name} | {_fmt(s['auc_all'])} | {_fmt(s['auc_seen'])} | "
            f"{_fmt(s.get('auc_cold'))} | {_fmt(s['pr_auc'])} | {_fmt(s['popularity_auc'])} | "
            f"{_fmt(s['popularity_auc_seen'])} | {_fmt(s.get('popularity_auc_cold'))} | "
            f"{s['epochs']} | {seconds} | {_fmt(s['samples_per_s'])} |"
        )
    return table


def _protocol_note(variants: dict[str, dict]) -> list[str]:
    """What the AUCs are over, and how the val negatives were drawn."""
    protocols = sorted(
        {r["summary"].get("negative_protocol", "unrecorded") for r in variants.values()}
    )
    described = "; ".join(
        f"`{p}`: {PROTOCOLS.get(p, 'not recorded in val.parquet')}" for p in protocols
    )
    return [
        "AUC over all validation pairs, over the *seen* ones (both products in train) and "
        "the *cold* ones (at least one product without a train pair, which a model knows "
        "only through side information); "
        "popularity scores a pair by the product of the two train degrees. A resumed run's "
        f"seconds add up its parts. Validation negatives ({described}).",
    ]


def _settings_table(variants: dict[str, dict]) -> list[str]:
    """Per run: its config where it differs from the defaults, its protocol and seed."""
    defaults = TrainConfig().to_dict()
    table = ["| run | settings other than the defaults | protocol | seed |", "|---|---|---|---:|"]
    for name, run in variants.items():
        config = run["summary"]["config"]
        changed = [
            f"{key.replace('_', '-')} {value}"
            for key, value in config.items()
            if key != "seed" and key in defaults and value != defaults[key]
        ]
        table.append(
            f"| {name} | {', '.join(changed) or 'none'} | "
            f"{run['summary'].get('negative_protocol', '–')} | {config.get('seed', '–')} |"
        )
    defaults_text = ", ".join(  # the options of product pairs (each field's kinds)
        f"{f.name.replace('_', '-')} {str(f.default) or 'none'}"
        for f in dataclasses.fields(TrainConfig)
        if "pairs" in f.metadata["kinds"]
        and f.name not in ("eval_sample", "workers", "shuffle_groups")
    )
    return [*table, "", f"Defaults: {defaults_text}."]


def learning_curves(variants: dict[str, dict]) -> Figure:
    """AUC (all solid, seen dashed) and loss against step; epoch ends and popularity marked."""
    fig, (auc_ax, loss_ax) = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    first = next(iter(variants.values()))
    ends = [
        a["step"]
        for a, b in zip(first["metrics"], first["metrics"][1:])
        if a["epoch"] != b["epoch"]
    ][1:]  # the untrained point at step 0 closes no epoch
    for step in ends:
        for ax in (auc_ax, loss_ax):
            ax.axvline(step, color="0.6", linestyle=":", linewidth=1)
    if ends:
        auc_ax.plot([], [], color="0.6", linestyle=":", label="epoch boundary")
    popularity = first["summary"].get("popularity_auc")
    if popularity is not None:
        auc_ax.axhline(popularity, color="0.3", linestyle="-.", linewidth=1)
        auc_ax.plot([], [], color="0.3", linestyle="-.", label=f"popularity ({popularity:.3f})")
    for name, run in variants.items():
        points = [m for m in run["metrics"] if m["auc_all"] is not None]
        steps = [m["step"] for m in points]
        (line,) = auc_ax.plot(steps, [m["auc_all"] for m in points], marker=".", label=name)
        seen = [m["auc_seen"] for m in points]
        auc_ax.plot(steps, seen, color=line.get_color(), linestyle="--", linewidth=1)
        losses = [m for m in run["metrics"] if m["loss"] is not None]
        loss_ax.plot(
            [m["step"] for m in losses],
            [m["loss"] for m in losses],
            marker=".",
            color=line.get_color(),
        )
    auc_ax.plot([], [], color="0.2", linestyle="--", linewidth=1, label="seen pairs only")
    auc_ax.set(ylabel="ROC-AUC (val sample)", title="Learning curves")
    loss_ax.set(xlabel="step", ylabel="training loss")
    for ax in (auc_ax, loss_ax):
        ax.grid(alpha=0.3)
    auc_ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def precision_recall(variants: dict[str, dict]) -> Figure:
    """Per run: precision and recall against threshold, the crossing marked."""
    count = len(variants)
    columns = min(count, 4)
    rows = -(-count // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.6 * columns, 3.2 * rows + 0.6), squeeze=False, sharey=True
    )
    for ax, (name, run) in zip(axes.flat, variants.items()):
        kept = [r for r in run["pr"] if (r["predicted"] or 0) >= MIN_PREDICTED]
        thresholds = [r["threshold"] for r in kept]
        ax.plot(thresholds, [r["precision"] for r in kept], color="C0")
        ax.plot(thresholds, [r["recall"] for r in kept], color="C1")
        crossing = min(kept, key=lambda r: abs(r["precision"] - r["recall"]), default=None)
        if crossing is not None:
            value = (crossing["precision"] + crossing["recall"]) / 2
            ax.plot([crossing["threshold"]], [value], "o", color="0.2", markersize=4)
            ax.annotate(
                f"P = R = {value:.2f}\nat {crossing['threshold']:.2f}",
                (crossing["threshold"], value),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize="small",
            )
        ax.set(title=name, xlabel="threshold", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("precision / recall")
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color="C0"), plt.Line2D([], [], color="C1")]
    fig.legend(handles, ["precision", "recall"], loc="upper center", ncol=2)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def roc(variants: dict[str, dict]) -> Figure:
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for name, run in variants.items():
        auc = run["summary"]["auc_all"]
        ax.plot(
            [r["fpr"] for r in run["roc"]],
            [r["tpr"] for r in run["roc"]],
            label=f"{name} ({auc:.3f})",
        )
    first = next(iter(variants.values()))
    if first["popularity_roc"]:
        ax.plot(
            [r["fpr"] for r in first["popularity_roc"]],
            [r["tpr"] for r in first["popularity_roc"]],
            color="0.3",
            linestyle="-.",
            label=f"popularity ({first['summary']['popularity_auc']:.3f})",
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG, atomically, and close it."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path

"""DIR/report.md with its figures, from the stage stats and the runs' files.

Tables of the stages and of the variants, learning curves (AUC against step,
epoch boundaries marked), precision and recall against threshold per variant
(the reference's "cliff of death" figures) and the ROC curves on one figure.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt

from pipeline.contracts import PAIRS_STATS, PARSE_STATS, SPLIT_STATS
from pipeline.errors import PipelineError
from pipeline.files import atomic_output, clear_stale_temporaries
from recsys_stream import runs

FIGURES = "figures"


def report(data_dir: str | os.PathLike, quiet: bool = False) -> Path:
    """Write ``data_dir/report.md`` and ``data_dir/figures/*.png``; return the report's path."""
    data_dir = Path(data_dir)
    variants = _variants(data_dir)
    if not variants:
        raise PipelineError(f"{data_dir / 'runs'}: no finished run (train one first)")
    figures = data_dir / FIGURES
    figures.mkdir(exist_ok=True)
    for folder in (data_dir, figures):
        clear_stale_temporaries(folder)
    drawn = [
        _learning_curves(variants, figures / "learning_curves.png"),
        _precision_recall(variants, figures / "precision_recall.png"),
        _roc(variants, figures / "roc.png"),
    ]
    lines = [f"# {data_dir.name}: recsys-stream report", "", "## Stages", ""]
    lines += _stage_table(data_dir)
    lines += ["", "## Models", "", *_variant_table(variants)]
    lines += ["", *_protocol_note(variants)]
    titles = ["Learning curves", "Precision and recall against threshold", "ROC curves"]
    for title, path in zip(titles, drawn):
        lines += ["", f"## {title}", "", f"![{title}]({FIGURES}/{path.name})"]
    out = data_dir / "report.md"
    with atomic_output(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return out


def _variants(data_dir: Path) -> dict[str, dict]:
    """Finished runs by name, each with its summary, metrics, pr and roc rows."""
    found = {}
    for summary in sorted((data_dir / "runs").glob(f"*/{runs.SUMMARY}")):
        run = summary.parent
        found[run.name] = {
            "summary": json.loads(summary.read_text()),
            "metrics": _csv(run / runs.METRICS),
            "pr": _csv(run / runs.PR),
            "roc": _csv(run / runs.ROC),
        }
    return found


def _csv(path: Path) -> list[dict[str, float | None]]:
    with open(path, newline="") as file:
        return [
            {k: float(v) if v not in ("", "nan") else None for k, v in row.items()}
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


PROTOCOLS = {
    "products": "drawn from the distinct val products, each equally likely (the reference "
    "article's protocol): popularity alone tells many of them from true pairs",
    "occurrences": "drawn from the val products in proportion to how often they occur in "
    "val pairs, so they share the positives' popularity: popularity alone scores about 0.5, "
    "and only what a model knows beyond popularity counts",
}


def _protocol_note(variants: dict[str, dict]) -> list[str]:
    """What the AUCs are over, and how the val negatives were drawn."""
    protocols = sorted(
        {run["summary"].get("negative_protocol", "unrecorded") for run in variants.values()}
    )
    described = "; ".join(
        f"`{p}`: {PROTOCOLS.get(p, 'not recorded in val.parquet')}" for p in protocols
    )
    return [
        "AUC over all validation pairs and over the *seen* ones (both products in train); "
        "popularity scores a pair by the product of the two train degrees. "
        f"Validation negatives ({described}).",
    ]


def _stage_table(data_dir: Path) -> list[str]:
    stats = {}
    for name in (PARSE_STATS, PAIRS_STATS, SPLIT_STATS):
        path = data_dir / name
        stats[name] = json.loads(path.read_text()) if path.is_file() else {}
    parse, pairs, split = stats[PARSE_STATS], stats[PAIRS_STATS], stats[SPLIT_STATS]
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
            f"positives + {_fmt(split.get('val_negatives'))} negatives",
            split,
        ),
    ]
    table = ["| stage | result | seconds | peak RSS (MiB) |", "|---|---|---:|---:|"]
    for stage, text, values in rows:
        table.append(
            f"| {stage} | {text} | {_fmt(values.get('seconds'), 1)} | "
            f"{_fmt(values.get('peak_rss_mb'), 0)} |"
        )
    return table


def _variant_table(variants: dict[str, dict]) -> list[str]:
    table = [
        "| model | AUC all | AUC seen | PR-AUC | popularity AUC all | popularity AUC seen "
        "| epochs | seconds | samples/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in variants.items():
        s = run["summary"]
        table.append(
            f"| {name} | {_fmt(s['auc_all'])} | {_fmt(s['auc_seen'])} | {_fmt(s['pr_auc'])} | "
            f"{_fmt(s['popularity_auc'])} | {_fmt(s['popularity_auc_seen'])} | {s['epochs']} | "
            f"{_fmt(s['seconds'], 1)} | {_fmt(s['samples_per_s'])} |"
        )
    return table


def _learning_curves(variants: dict[str, dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, run in variants.items():
        points = [m for m in run["metrics"] if m["auc_all"] is not None]
        (line,) = ax.plot(
            [m["step"] for m in points], [m["auc_all"] for m in points], marker=".", label=name
        )
        ends = [
            a["step"]
            for a, b in zip(run["metrics"], run["metrics"][1:])
            if a["epoch"] != b["epoch"]
        ]
        for step in ends:  # epoch boundaries
            ax.axvline(step, color=line.get_color(), alpha=0.25, linestyle=":")
    ax.set(xlabel="step", ylabel="ROC-AUC (validation sample)", title="Learning curves")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _precision_recall(variants: dict[str, dict], path: Path) -> Path:
    count = len(variants)
    fig, axes = plt.subplots(1, count, figsize=(4 * count, 3.6), squeeze=False, sharey=True)
    for ax, (name, run) in zip(axes[0], variants.items()):
        thresholds = [r["threshold"] for r in run["pr"]]
        ax.plot(thresholds, [r["precision"] for r in run["pr"]], label="precision")
        ax.plot(thresholds, [r["recall"] for r in run["pr"]], label="recall")
        ax.set(title=name, xlabel="threshold")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    return _save(fig, path)


def _roc(variants: dict[str, dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, run in variants.items():
        auc = run["summary"]["auc_all"]
        ax.plot(
            [r["fpr"] for r in run["roc"]],
            [r["tpr"] for r in run["roc"]],
            label=f"{name} ({auc:.3f})",
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path

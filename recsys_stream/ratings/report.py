"""The report of a ratings dataset: stages, models, curves, predictions, a PCA of the items.

Built, like the pairs report (:mod:`recsys_stream.pairs.report`), from the stage
stats and whatever finished runs the directory holds: a stages table, a
models table (RMSE and MAE on the original scale, against the global mean,
best epoch, seconds, ratings/s), each run's settings, and three figures,
each with a line saying what to look for: learning curves (val RMSE against
epoch), the predicted ratings against the true ones (from each run's
predictions.csv), and a PCA of the best run's item vectors, with the titles
at both ends of its first two components (the EmbeddingNet article's way
of reading what the model learned). Next-item runs of sequence models get a
section of their own: HR@10 and NDCG@10 beside popularity and
co-occurrence, and their learning curves. Runs trained on stage files rerun
since are left out, each named in a note under the stages table.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import numpy as np
import pyarrow.parquet as pq
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from pipeline.contracts import (
    EMBEDDINGS,
    ITEMS,
    RATINGS_STATS,
    SEQUENCES_STATS,
    SPLIT_RATINGS_STATS,
)
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.runs import legacy_kind
from recsys_stream.report import left_out_lines, save, stage_table, stats_of

PCA_ITEMS = 1000  # the most-rated items the PCA figure places
ENDS = 5  # titles named at each end of a component


def rating_report(
    data_dir: Path, runs: dict[str, dict], figures: Path, left_out: list[str]
) -> list[str]:
    """The report's lines; its figures are written to ``figures``. ``left_out``: the
    notes of the runs left out (:func:`recsys_stream.report.current_runs`)."""
    next_item = {name: run for name, run in runs.items() if _kind(run["summary"]) == "next-item"}
    variants = {name: run for name, run in runs.items() if name not in next_item}
    lines = [*_header(data_dir), "", "## Stages", "", *_stage_table(data_dir)]
    lines += left_out_lines(left_out)
    if variants:
        lines += _rating_sections(data_dir, variants, figures)
    if next_item:
        lines += _next_item_sections(next_item, figures)
    return lines


def _rating_sections(data_dir: Path, variants: dict[str, dict], figures: Path) -> list[str]:
    best = min(variants, key=lambda name: variants[name]["summary"]["rmse"])
    pca_figure, components = item_pca(data_dir, best)
    sections = [
        (
            "Learning curves",
            learning_curves(variants),
            "rating_curves.png",
            "Validation RMSE on the original scale against epoch, ten points an epoch from the "
            "untrained model, with the global mean's RMSE. Look for the curve's lowest point: "
            "a curve that rises after it overfits (lower --lr, raise --l2, or --patience), one "
            "still falling wants more epochs.",
        ),
        (
            "Predicted against true ratings",
            predicted_against_true(variants),
            "predicted_vs_true.png",
            "For each true rating, the spread of the predictions (a fixed sample of val "
            "ratings): the boxes should climb with the true rating. Boxes bunched in the middle "
            "show a model that learned little beyond the mean.",
        ),
        (
            f"Item vectors of {best}, first two principal components",
            pca_figure,
            "item_pca.png",
            f"The {PCA_ITEMS:,} most-rated items placed by the first two principal components of "
            "the run's item vectors; the titles at both ends of each component say what it "
            "separates (below).",
        ),
    ]
    lines = ["", "## Models", "", *_model_table(variants)]
    lines += ["", "## Settings", "", *_settings(variants)]
    for title, figure, name, caption in sections:
        save(figure, figures / name)
        lines += ["", f"## {title}", "", f"![{title}](figures/{name})", "", caption]
    for index, (high, low) in enumerate(components, 1):
        lines += ["", f"Component {index}, one end: {'; '.join(high)}."]
        lines += ["", f"Component {index}, the other end: {'; '.join(low)}."]
    return lines


def _header(data_dir: Path) -> list[str]:
    stats = stats_of(data_dir / RATINGS_STATS)
    made = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return [
        f"# {data_dir.name}: recsys-stream report (ratings)",
        "",
        f"Raw file `{stats.get('raw', '–')}` (SHA-256 {stats.get('raw_sha256', '–')[:12]}…, "
        f"format {stats.get('format', '–')}). Report made {made}.",
    ]


def _stage_table(data_dir: Path) -> list[str]:
    read, split = stats_of(data_dir / RATINGS_STATS), stats_of(data_dir / SPLIT_RATINGS_STATS)
    how = f"{split.get('folds')} folds" if split.get("folds") else f"by {split.get('by', '–')}"
    files = ", ".join(f"{name}: {v['rows']:,}" for name, v in split.get("files", {}).items())
    rows = [
        (
            "ratings",
            f"{read.get('lines', 0):,} lines → {read.get('ratings', 0):,} ratings of "
            f"{read.get('users', 0):,} users on {read.get('items', 0):,} items; "
            f"{read.get('repeated', 0):,} repeated, {read.get('rejected', 0):,} rejected",
            read,
        ),
        ("split-ratings", f"{how}: {files}", split),
    ]
    runs = stats_of(data_dir / SEQUENCES_STATS)
    if runs:
        files = ", ".join(
            f"{name}: {v['rows']:,} rows" for name, v in runs.get("files", {}).items()
        )
        rows.append(("sequences", f"runs of at most {runs['max_length']}: {files}", runs))
    return stage_table(rows)


def _model_table(variants: dict[str, dict]) -> list[str]:
    table = [
        "| run | model | RMSE | MAE | RMSE seen | RMSE cold | global mean RMSE "
        "| best epoch / epochs | seconds | ratings/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in variants.items():
        s = run["summary"]
        cells = [s["rmse"], s["mae"], s.get("rmse_seen"), s.get("rmse_cold"), s["global_mean_rmse"]]
        shown = " | ".join("–" if c is None else f"{c:.4f}" for c in cells)
        table.append(
            f"| {name} | {s['config']['model']} | {shown} | {s['best_epoch']} / {s['epochs']} "
            f"| {s['seconds']} | {s['samples_per_s']:,} |"
        )
    return table


def _kind(summary: dict) -> str:
    """The kind of task a run's summary says it trained (legacy: its model and task)."""
    config = TrainConfig.from_dict(summary["config"])
    return summary.get("kind") or legacy_kind(config, ratings=True)


def _settings(variants: dict[str, dict]) -> list[str]:
    lines = ["| run | settings that differ from the defaults of its kind |", "|---|---|"]
    for name, run in variants.items():
        config = run["summary"]["config"]
        kind = _kind(run["summary"])
        defaults = TrainConfig.defaults(kind, **{"model": config["model"]}).to_dict()
        changed = [
            f"{k.replace('_', '-')} {v}"
            for k, v in config.items()
            if k not in ("eval_sample", "workers", "shuffle_groups") and defaults.get(k) != v
        ]
        lines.append(f"| {name} | {', '.join(changed) or '(defaults)'} |")
    return lines


def _next_item_sections(runs: dict[str, dict], figures: Path) -> list[str]:
    """The next-item table (each run and the baselines of the first) and curves."""
    columns = ("test_hr10", "test_ndcg10", "val_hr10", "val_ndcg10")
    table = [
        "| run | HR@10 | NDCG@10 | val HR@10 | val NDCG@10 | best epoch / epochs | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in runs.items():
        s = run["summary"]
        cells = " | ".join(f"{s[c]:.4f}" for c in columns)
        table.append(f"| {name} | {cells} | {s['best_epoch']} / {s['epochs']} | {s['seconds']} |")
    first = next(iter(runs.values()))["summary"]
    for baseline in ("popularity", "cooccurrence"):
        cells = " | ".join(f"{first[f'{baseline}_{c}']:.4f}" for c in columns)
        table.append(f"| {baseline} (baseline) | {cells} | – | – |")
    figure = "next_item_curves.png"
    save(next_item_curves(runs), figures / figure)
    return [
        "",
        "## Next item",
        "",
        f"Leave-one-out over {first['eval_users']:,} users: each user's last item is the test "
        "target (HR@10, NDCG@10), the one before it the val target; each target ranked against "
        "every item, the user's earlier items left out. The baselines count the same train "
        "histories.",
        "",
        *table,
        "",
        f"![Next-item learning curves](figures/{figure})",
        "",
        "Val NDCG@10 against epoch, with the baselines. Look for the curve to clear both lines; "
        "one that falls after its peak overfits (--patience keeps the peak).",
        "",
        *_settings(runs),
    ]


def next_item_curves(runs: dict[str, dict]) -> Figure:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, run in runs.items():
        points = run["metrics"]
        steps = [p["step"] for p in points]
        per_epoch = max(steps) / max(max(p["epoch"] for p in points), 1)
        ax.plot([s / per_epoch for s in steps], [p["ndcg10"] for p in points], label=name)
    first = next(iter(runs.values()))["summary"]
    for baseline, style in (("popularity", ":"), ("cooccurrence", "--")):
        ax.axhline(first[f"{baseline}_val_ndcg10"], color="grey", linestyle=style, label=baseline)
    ax.set(xlabel="epoch", ylabel="val NDCG@10", title="Next item: validation NDCG@10")
    ax.legend(fontsize=8)
    return fig


def learning_curves(variants: dict[str, dict]) -> Figure:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    baseline = None
    for name, run in variants.items():
        points = run["metrics"]
        steps = [p["step"] for p in points]
        per_epoch = max(steps) / max(max(p["epoch"] for p in points), 1)
        ax.plot([s / per_epoch for s in steps], [p["rmse"] for p in points], label=name)
        baseline = run["summary"]["global_mean_rmse"]
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle=":", label="global mean")
    ax.set(xlabel="epoch", ylabel="val RMSE", title="Validation RMSE")
    ax.legend(fontsize=8)
    return fig


def predicted_against_true(variants: dict[str, dict]) -> Figure:
    fig, axes = plt.subplots(1, len(variants), figsize=(4 * len(variants), 4), squeeze=False)
    for ax, (name, run) in zip(axes[0], variants.items()):
        true = np.array([row["rating"] for row in run["predictions"]])
        predicted = np.array([row["predicted"] for row in run["predictions"]])
        levels = np.unique(true)
        ax.boxplot([predicted[true == level] for level in levels], showfliers=False)
        ax.set_xticks(range(1, len(levels) + 1), [f"{level:g}" for level in levels])
        ax.set(xlabel="true rating", ylabel="predicted", title=name)
    fig.tight_layout()
    return fig


def item_pca(data_dir: Path, run: str) -> tuple[Figure, list[tuple[list[str], list[str]]]]:
    """The PCA figure of the run's item vectors, and each component's end titles."""
    items = pq.read_table(data_dir / ITEMS, columns=["id", "ratings", "title", "key"])
    count = items.column("ratings").to_numpy()
    chosen = np.sort(np.argsort(-count, kind="stable")[:PCA_ITEMS])
    vectors = pq.read_table(data_dir / "runs" / run / EMBEDDINGS, columns=["vector"])
    matrix = np.stack(vectors.column("vector").take(chosen).to_numpy(zero_copy_only=False))
    names = [
        title or key
        for title, key in zip(
            items.column("title").take(chosen).to_pylist(),
            items.column("key").take(chosen).to_pylist(),
        )
    ]
    placed = PCA(n_components=2, random_state=0).fit_transform(matrix)
    fig, ax = plt.subplots(figsize=(8, 6))
    ax.scatter(placed[:, 0], placed[:, 1], s=6, alpha=0.5)
    components = []
    for axis in range(2):
        order = np.argsort(placed[:, axis])
        ends = (order[::-1][:ENDS], order[:ENDS])
        components.append(tuple([names[i] for i in end] for end in ends))
        for i in np.concatenate(ends):
            ax.annotate(names[i][:30], placed[i], fontsize=6)
    ax.set(xlabel="component 1", ylabel="component 2", title=f"Item vectors of {run}")
    return fig, components

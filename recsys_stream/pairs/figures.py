"""The pair report's figures: learning curves, precision and recall, ROC.

Each returns a matplotlib figure, which the tests inspect and
:func:`recsys_stream.report.save` writes.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

MIN_PREDICTED = 100  # thresholds predicting fewer pairs are left out of the P/R figure


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

"""Scoring validation pairs and the metrics of a run, with scikit-learn.

AUCs are reported over all validation rows and over the ``seen`` ones (both
products occur in train), beside a popularity baseline (score = product of
train degrees) that shows what a model adds beyond popularity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from recsys_stream.pairs.models import PairModel

SCORE_BYTES = 64 << 20  # a scoring chunk's temporaries: two gathered embeddings and a product
THRESHOLDS = np.round(np.linspace(0, 1, 101), 2)
ROC_POINTS = 500


@dataclass
class Validation:
    """Validation rows as arrays: about 10 bytes a row."""

    src: np.ndarray  # int32
    dst: np.ndarray  # int32
    label: np.ndarray  # int8
    seen: np.ndarray  # bool

    @classmethod
    def load(cls, path: Path) -> Validation:
        table = pq.read_table(path, columns=["src", "dst", "label", "seen"])
        return cls(*(table.column(name).to_numpy() for name in ["src", "dst", "label", "seen"]))

    def sample(self, size: int, seed: int) -> Validation:
        """A fixed random subset of ``size`` rows (all of them when fewer)."""
        if size >= len(self.label):
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self.label), size, replace=False))
        return Validation(self.src[rows], self.dst[rows], self.label[rows], self.seen[rows])


@torch.no_grad()
def scores(model: PairModel, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The model's scores of the pairs (``model.score``), in chunks of bounded memory."""
    out = np.empty(len(src), dtype=np.float32)
    chunk = max(1, SCORE_BYTES // (3 * 4 * model.dim))
    for start in range(0, len(src), chunk):
        a = torch.from_numpy(src[start : start + chunk].astype(np.int64))
        b = torch.from_numpy(dst[start : start + chunk].astype(np.int64))
        out[start : start + len(a)] = model.score(a, b).numpy()
    return out


def popularity_scores(degree: np.ndarray, val: Validation) -> np.ndarray:
    """The baseline's scores: the product of the two products' train degrees."""
    return degree[val.src].astype(np.float64) * degree[val.dst]


def auc(label: np.ndarray, score: np.ndarray) -> float | None:
    """ROC-AUC, or None when only one class is present."""
    return float(roc_auc_score(label, score)) if 0 < label.sum() < len(label) else None


def pr_auc(label: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the precision-recall curve (average precision), or None for one class."""
    return float(average_precision_score(label, score)) if 0 < label.sum() < len(label) else None


def auc_all_and_seen(val: Validation, score: np.ndarray) -> tuple[float | None, float | None]:
    return auc(val.label, score), auc(val.label[val.seen], score[val.seen])


def precision_recall_table(label: np.ndarray, score: np.ndarray) -> dict[str, np.ndarray]:
    """Precision and recall when predicting a pair at score >= t, for t = 0.00 .. 1.00."""
    bins = np.minimum((score * 100).astype(np.int64), 100)  # score in [t, t + 0.01)
    positives = np.bincount(bins[label == 1], minlength=101)[::-1].cumsum()[::-1]
    predicted = np.bincount(bins, minlength=101)[::-1].cumsum()[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, positives / np.maximum(predicted, 1), np.nan)
    recall = positives / max(int(label.sum()), 1)
    return {
        "threshold": THRESHOLDS,
        "precision": precision,
        "recall": recall,
        "predicted": predicted,
    }


def roc_points(label: np.ndarray, score: np.ndarray) -> dict[str, np.ndarray]:
    """The ROC curve thinned to about ROC_POINTS points, for plotting."""
    fpr, tpr, _ = roc_curve(label, score, drop_intermediate=True)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), ROC_POINTS)).astype(np.int64))
    return {"fpr": fpr[keep], "tpr": tpr[keep]}

"""Approximate top-k from a faiss index, built once per run and saved beside it.

faiss's HNSW and IVF indexes search by L2 distance. A run scores a pair by
``q . c + bias[c]``, an inner product, so the vectors are mapped the usual
way (Bachrach et al., "Speeding up the Xbox recommender system", 2014): each
candidate becomes ``[c, bias[c], sqrt(M^2 - |c|^2 - bias[c]^2)]``, with M the
largest norm of ``[c, bias[c]]``, and each query ``[q, 1, 0]``; then
``|q' - c'|^2 = |q|^2 + 1 + M^2 - 2 (q . c + bias[c])``, so the nearest
candidate is the best scored. Cosine runs search their unit vectors as
they are. The candidates an index returns are rescored exactly and sorted
(best first, ties to the smaller id), so the approximation is only in which
candidates are found, never in their scores or order.

The index is saved as ``RUN/neighbours/KIND.faiss`` (``KIND-cosine.faiss``
for cosine) beside a JSON naming the model.pt (its sha256) and the space it
was built for; a later call reuses it while both still match, and builds it
again otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.files import atomic_output, write_json
from recsys_stream.core.runs import MODEL, file_sha256
from recsys_stream.neighbours import KINDS
from recsys_stream.neighbours.exact import Exclusions, augmented, listed

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # faiss's own OpenMP: sleep, not spin
import faiss

HNSW_LINKS = 32  # neighbours a node keeps (faiss's M)
HNSW_BUILD_DEPTH = 80  # efConstruction
HNSW_SEARCH_DEPTH = 512  # efSearch, at least k + the exclusions: recall@10 0.96 on a
# trained run of 21k products, 0.85 at 128 (2026-12-07)
IVF_LISTS_PER_ROOT = 4  # nlist = 4 sqrt(V), the usual rule
IVF_PROBES = 32  # lists searched a query
IVF_TRAIN_PER_LIST = 64  # k-means points a list, a sample of the candidates


@dataclass(frozen=True)
class Space:
    """What is searched: query and candidate rows, a candidate bias (or none), and
    whether the rows are unit vectors compared by cosine."""

    queries: torch.Tensor  # (V, d)
    candidates: torch.Tensor  # (V, d)
    bias: torch.Tensor | None  # (V,)
    cosine: bool

    def signature(self) -> dict:
        return {
            "rows": len(self.candidates),
            "dim": self.candidates.shape[1],
            "bias": self.bias is not None,
            "cosine": self.cosine,
        }


def l2_rows(space: Space) -> tuple[np.ndarray, np.ndarray]:
    """(queries, candidates) as float32 arrays whose L2 order is the score's order."""
    queries, candidates = augmented(space.queries, space.candidates, space.bias)
    if space.cosine:
        return queries.numpy(), candidates.numpy()
    squared = candidates.double().square().sum(1)
    lift = (squared.max() - squared).clamp(min=0).sqrt().float()
    return _l2_queries(queries, space.cosine), torch.cat([candidates, lift[:, None]], 1).numpy()


def _l2_queries(queries: torch.Tensor, cosine: bool) -> np.ndarray:
    """Augmented queries as the index searches them: with a zero for the lift."""
    return (
        queries.numpy() if cosine else torch.cat([queries, torch.zeros(len(queries), 1)], 1).numpy()
    )


class Approximate:
    """A faiss index over a space's candidates, searched for their queries."""

    def __init__(self, space: Space, index: faiss.Index, kind: str):
        self.space, self.index, self.kind = space, index, kind
        self.queries, self.candidates = augmented(space.queries, space.candidates, space.bias)
        self.query_rows = _l2_queries(self.queries, space.cosine)

    @classmethod
    def of_run(cls, run: Path, space: Space, kind: str) -> Approximate:
        """The run's saved index of ``kind`` when it matches the model and space, else a
        new one, saved."""
        saved = cls.saved(run, space, kind)
        if saved is not None:
            return saved
        index = build(space, kind)
        path, about = index_paths(run, kind, space.cosine)
        with atomic_output(path) as tmp:
            faiss.write_index(index, str(tmp))
        write_json(about, _identity(run, space))
        return cls(space, index, kind)

    @classmethod
    def saved(cls, run: Path, space: Space, kind: str) -> Approximate | None:
        """The run's saved index of ``kind``, or None when there is none or it was built
        for another model.pt or space."""
        if kind not in KINDS:
            raise PipelineError(f"unknown index {kind!r}: choose from {', '.join(KINDS)}")
        path, about = index_paths(run, kind, space.cosine)
        if not (path.exists() and about.exists()):
            return None
        if json.loads(about.read_text()) != _identity(run, space):
            return None
        return cls(space, faiss.read_index(str(path)), kind)

    def search(
        self, query_ids: np.ndarray, k: int, exclusions: Exclusions
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores), each (len(query_ids), k), best first: the index's candidates for
        each query, less its exclusions, rescored exactly; -1 and -inf pad a row that
        found fewer than k."""
        extra = int(np.diff(exclusions.offsets).max(initial=0))
        fetch = min(k + extra, self.index.ntotal)
        _set_depth(self.index, fetch)
        _, found = self.index.search(self.query_rows[query_ids], fetch)
        return rescored(self.queries[query_ids], self.candidates, found, k, exclusions)


def build(space: Space, kind: str) -> faiss.Index:
    """A new index of ``kind`` over the space's candidates (seeded: the same vectors
    give the same index)."""
    _, rows = l2_rows(space)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(rows.shape[1], HNSW_LINKS)
        index.hnsw.efConstruction = HNSW_BUILD_DEPTH
    else:
        lists = max(1, min(int(IVF_LISTS_PER_ROOT * np.sqrt(len(rows))), len(rows) // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(rows.shape[1]), rows.shape[1], lists)
        index.cp.seed = 1234
        sample = np.random.default_rng(0).choice(
            len(rows), min(len(rows), lists * IVF_TRAIN_PER_LIST), replace=False
        )
        index.train(rows[np.sort(sample)])
    index.add(rows)
    return index


def _set_depth(index: faiss.Index, fetch: int) -> None:
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = max(HNSW_SEARCH_DEPTH, fetch)
    else:
        index.nprobe = min(IVF_PROBES, index.nlist)


def rescored(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    found: np.ndarray,
    k: int,
    exclusions: Exclusions,
) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each row's ``found`` candidates (-1 for none) by exact score, less
    the row's exclusions: best first, ties to the smaller id."""
    keep = (found >= 0) & ~listed(found, exclusions.offsets, exclusions.ids)
    rows = torch.from_numpy(np.where(keep, found, 0))
    scores = torch.einsum("qd,qfd->qf", queries, candidates[rows]).numpy()
    scores[~keep] = -np.inf
    order = _order(scores, np.where(keep, found, np.iinfo(np.int64).max))[:, :k]
    best_ids = np.take_along_axis(np.where(keep, found, -1), order, 1)
    best_scores = np.take_along_axis(scores, order, 1)
    if best_ids.shape[1] < k:
        pad = k - best_ids.shape[1]
        best_ids = np.pad(best_ids, ((0, 0), (0, pad)), constant_values=-1)
        best_scores = np.pad(best_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return best_ids, best_scores.astype(np.float32)


def _order(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Each row's positions sorted by score descending, then id ascending."""
    by_id = np.argsort(ids, axis=1, kind="stable")
    by_score = np.argsort(-np.take_along_axis(scores, by_id, 1), axis=1, kind="stable")
    return np.take_along_axis(by_id, by_score, 1)


def index_paths(run: Path, kind: str, cosine: bool) -> tuple[Path, Path]:
    """The index file of a run and the JSON naming what it was built from."""
    name = f"{kind}-cosine" if cosine else kind
    folder = Path(run) / "neighbours"
    return folder / f"{name}.faiss", folder / f"{name}.json"


def _identity(run: Path, space: Space) -> dict:
    return {"model_sha256": file_sha256(Path(run) / MODEL), **space.signature()}

"""Products similar to a given one, under a trained run's own score.

Exact top-k over the whole vocabulary (:mod:`recsys_stream.neighbours.exact`),
or from the run's saved faiss index when it has one (or ``method="ann"``
asks for it; :mod:`recsys_stream.neighbours.approximate`). The score is the
model's (``query . candidate + candidate bias``, the logit
less what is the same for every candidate), so ``similar`` ranks as the
evaluation scores. The items of a ratings run are compared by the cosine of
their vectors. A run whose stages were rerun since it trained is refused
(:mod:`recsys_stream.core.lineage`). The library returns a :class:`Result`; the
command line prints it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pipeline.contracts import ITEMS, VOCAB
from pipeline.errors import PipelineError
from recsys_stream.core.runs import dataset_of
from recsys_stream.core.trained import load_run
from recsys_stream.neighbours import DEFAULT_INDEX
from recsys_stream.neighbours.approximate import Approximate, Space
from recsys_stream.neighbours.exact import Exclusions, top_k

DEFAULT_K = 10
SUGGESTIONS = 5


@dataclass
class Neighbour:
    asin: str
    title: str | None
    score: float  # the model's probability that the two pair (cosine similarity with cosine)


@dataclass
class Answer:
    """One query: its neighbours best first, or why it has none."""

    query: str  # as asked
    asin: str | None = None  # the vocabulary's asin it matched (case may differ)
    title: str | None = None
    similar: list[Neighbour] = field(default_factory=list)
    error: str | None = None
    suggestions: list[str] = field(default_factory=list)


@dataclass
class Result:
    answers: list[Answer]
    k: int  # neighbours per answer
    asked_k: int  # -k as asked; more than k when the vocabulary is smaller
    method: str = "exact"  # or the faiss index answered from ("hnsw", "ivf")

    @property
    def unknown(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.error]

    def to_json(self) -> list[dict]:
        return [
            {key: value for key, value in asdict(answer).items() if value is not None}
            for answer in self.answers
        ]


class Index:
    """A trained run's vectors with the vocabulary's asins; titles read on demand.

    vocab.parquet holds its rows in id order, so a row's position is its id.
    For a ratings run, the items' vectors with items.parquet's keys, compared
    by cosine (a rating model scores users against items, not item pairs).
    """

    def __init__(self, run: str | os.PathLike):
        trained = load_run(run, current=True)
        model = trained.model
        if trained.kind != "pairs":
            self.queries = self.candidates = model.item_vectors().detach()
            self.bias, self.offset, self.cosine_only = None, 0.0, True
            ids, key = ITEMS, "key"
        else:
            self.queries, self.candidates = model.query_vectors(), model.candidate_vectors()
            self.bias, self.offset = model.candidate_bias(), model.global_offset()
            self.cosine_only = False
            ids, key = VOCAB, "asin"
        self.vocab = pq.ParquetFile(dataset_of(Path(run)) / ids)
        self.asins = self.vocab.read(columns=[key]).column(key)

    def ids(self, asins: list[str]) -> np.ndarray:
        """Vocabulary ids of ``asins``, matched exactly, else in upper or lower case; -1
        for unknown ones."""
        ids = self._exact(asins)
        for change in (str.upper, str.lower):
            missing = np.flatnonzero(ids < 0)
            if len(missing):
                ids[missing] = self._exact([change(asins[i]) for i in missing])
        return ids

    def _exact(self, asins: list[str]) -> np.ndarray:
        queries = pa.array(asins, pa.string())
        hits = np.flatnonzero(
            pc.is_in(self.asins, value_set=queries).to_numpy(zero_copy_only=False)
        )
        found = pc.index_in(queries, value_set=self.asins.take(pa.array(hits)))
        return np.append(hits, -1)[found.fill_null(-1).to_numpy()]

    def suggestions(self, asin: str) -> list[str]:
        """Vocabulary asins sharing the longest prefix (of 4+ characters) with ``asin``."""
        for length in range(len(asin) - 1, 3, -1):
            matches = self.asins.filter(pc.starts_with(self.asins, asin[:length].upper()))
            if len(matches):
                return matches.slice(0, SUGGESTIONS).to_pylist()
        return []

    def titles(self, ids: np.ndarray) -> list[str | None]:
        """Titles of ``ids``, reading only the vocabulary row groups that hold them."""
        sizes = [
            self.vocab.metadata.row_group(g).num_rows for g in range(self.vocab.num_row_groups)
        ]
        starts = np.cumsum([0, *sizes])
        groups = np.searchsorted(starts, ids, side="right") - 1
        titles = np.empty(len(ids), dtype=object)
        for group in np.unique(groups):
            here = groups == group
            column = self.vocab.read_row_group(int(group), columns=["title"]).column("title")
            titles[here] = column.take(pa.array(ids[here] - starts[group])).to_pylist()
        return titles.tolist()

    def space(self, cosine: bool) -> Space:
        """What a search ranks by: the logit less the query's own terms, or the cosine."""
        if cosine:
            unit = torch.nn.functional.normalize
            return Space(unit(self.queries, dim=1), unit(self.candidates, dim=1), None, True)
        return Space(self.queries, self.candidates, self.bias, False)

    def nearest(
        self, ids: np.ndarray, k: int, cosine: bool, approximate: Approximate | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the k best products for each query id, best first, never the query.

        Ranks by logit, which orders as the probability does; the query's own
        terms shift its whole row, so only the candidates' biases enter the
        ranking, and the sigmoid is taken of the k winners alone.
        """
        k = min(k, len(self.candidates) - 1)
        if approximate is not None:
            found, values = approximate.search(ids, k, Exclusions.own(ids))
        else:
            space = self.space(cosine)
            found, values = top_k(
                space.queries[ids], space.candidates, k, space.bias, Exclusions.own(ids)
            )
        if not cosine:
            own = self.bias.detach().numpy()[ids][:, None] if self.bias is not None else 0.0
            offset = float(torch.as_tensor(self.offset).detach())
            values = 1 / (1 + np.exp(-(values + own + offset)))
        return found, values.astype(np.float32)

    def saved_index(self, run: Path, cosine: bool, method: str | None, kind: str):
        """The faiss index to answer from: built for ``method`` "ann", the saved one (if it
        still matches the run) for None, none for "exact"."""
        if method in ("exact", "tiles"):  # a few queries cost little exactly
            return None
        if method is None:
            return Approximate.saved(run, self.space(cosine), kind)
        return Approximate.of_run(run, self.space(cosine), kind)


def similar(
    run: str | os.PathLike,
    asins: list[str],
    k: int = DEFAULT_K,
    cosine: bool = False,
    method: str | None = None,
    index: str = DEFAULT_INDEX,
) -> Result:
    """For each asin: its k most similar products with titles and scores, or why it has none.

    ``k`` larger than the vocabulary less the query is clamped (``Result.k``).
    ``method``: "exact", "ann" (the run's saved faiss ``index``, built if
    missing), or None: the saved index when one matches the run, else exact.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise PipelineError(f"-k must be at least 1, got {k!r}")
    if not asins:
        raise PipelineError("give at least one ASIN")
    kind, index = index, Index(run)
    cosine = cosine or index.cosine_only
    approximate = index.saved_index(Path(run), cosine, method, kind)
    ids = index.ids(asins)
    queries = ids[ids >= 0]
    neighbours, scores = index.nearest(queries, k, cosine, approximate)
    width = neighbours.shape[1]
    query_titles = iter(index.titles(queries))
    query_asins = iter(index.asins.take(pa.array(queries)).to_pylist())
    found = zip(  # per known query: its neighbours' asins, titles and scores
        _rows(index.asins.take(pa.array(neighbours.ravel())).to_pylist(), width),
        _rows(index.titles(neighbours.ravel()), width),
        scores.tolist(),
    )
    answers = []
    for asin, product in zip(asins, ids):
        if product < 0:
            answers.append(Answer(asin, error="unknown ASIN", suggestions=index.suggestions(asin)))
            continue
        similar_asins, titles, row_scores = next(found)
        answers.append(
            Answer(
                asin,
                asin=next(query_asins),
                title=next(query_titles),
                similar=[
                    Neighbour(a, t, round(s, 6))
                    for a, t, s in zip(similar_asins, titles, row_scores)
                ],
            )
        )
    return Result(answers, k=width, asked_k=k, method=approximate.kind if approximate else "exact")


def _rows(values: list, width: int) -> list[list]:
    return [values[start : start + width] for start in range(0, len(values), width)]

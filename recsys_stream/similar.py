"""Products similar to a given one, under a trained run's own score.

Exact top-k over the whole vocabulary: queries are answered in batches of
matrix products, sized so a batch's score matrix stays near 128 MB.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pipeline.contracts import VOCAB
from pipeline.errors import PipelineError
from recsys_stream.models import MFBias
from recsys_stream.runs import dataset_of, load_model

SCORES_PER_BATCH = 1 << 25
SUGGESTIONS = 5


class Index:
    """A trained run's vectors with the vocabulary's asins; titles read on demand.

    vocab.parquet holds its rows in id order, so a row's position is its id.
    """

    def __init__(self, run: str | os.PathLike):
        self.model, self.config, _ = load_model(run)
        self.vocab = pq.ParquetFile(dataset_of(Path(run)) / VOCAB)
        self.asins = self.vocab.read(columns=["asin"]).column("asin")

    def ids(self, asins: list[str]) -> np.ndarray:
        """Vocabulary ids of ``asins``; -1 for unknown ones."""
        queries = pa.array(asins, pa.string())
        hits = np.flatnonzero(
            pc.is_in(self.asins, value_set=queries).to_numpy(zero_copy_only=False)
        )
        found = pc.index_in(queries, value_set=self.asins.take(pa.array(hits)))
        return np.append(hits, -1)[found.fill_null(-1).to_numpy()]

    def suggestions(self, asin: str) -> list[str]:
        """Vocabulary asins sharing the longest prefix (of 4+ characters) with ``asin``."""
        for length in range(len(asin) - 1, 3, -1):
            matches = self.asins.filter(pc.starts_with(self.asins, asin[:length]))
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

    @torch.no_grad()
    def nearest(self, ids: np.ndarray, k: int, cosine: bool) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the k best products for each query id, best first, never the query.

        Ranks by logit, which orders as the probability does; a query's own bias and the
        global bias shift its whole row, so only the candidates' biases enter the ranking
        and the sigmoid is taken of the k winners alone.
        """
        weight = self.model.embedding.weight
        table = torch.nn.functional.normalize(weight, dim=1) if cosine else weight
        with_bias = isinstance(self.model, MFBias) and not cosine
        bias = self.model.bias.weight[:, 0] if with_bias else None
        k = min(k, len(weight) - 1)
        batch = max(1, SCORES_PER_BATCH // len(weight))
        best_ids, best_scores = [np.empty((0, k), np.int64)], [np.empty((0, k), np.float32)]
        for start in range(0, len(ids), batch):
            query = torch.from_numpy(ids[start : start + batch])
            scores = table[query] @ table.T
            if with_bias:
                scores += bias
            scores[torch.arange(len(query)), query] = -torch.inf
            top = torch.topk(scores, k, dim=1)
            values = top.values
            if with_bias:
                values = values + bias[query][:, None] + self.model.global_bias
            best_ids.append(top.indices.numpy())
            best_scores.append((values if cosine else torch.sigmoid(values)).numpy())
        return np.concatenate(best_ids), np.concatenate(best_scores)


def similar(
    run: str | os.PathLike, asins: list[str], k: int = 10, cosine: bool = False
) -> list[dict]:
    """For each asin: its k most similar products with titles and scores, or why it has none."""
    if k < 1:
        raise PipelineError("-k must be at least 1")
    index = Index(run)
    ids = index.ids(asins)
    queries = ids[ids >= 0]
    neighbours, scores = index.nearest(queries, k, cosine)
    query_titles = iter(index.titles(queries))
    found = zip(  # per known query: its neighbours' asins, titles and scores
        _rows(index.asins.take(pa.array(neighbours.ravel())).to_pylist(), neighbours.shape[1]),
        _rows(index.titles(neighbours.ravel()), neighbours.shape[1]),
        scores.tolist(),
    )
    answers = []
    for asin, product in zip(asins, ids):
        if product < 0:
            answers.append(
                {"query": asin, "error": "unknown ASIN", "suggestions": index.suggestions(asin)}
            )
            continue
        similar_asins, titles, row_scores = next(found)
        answers.append(
            {
                "query": asin,
                "title": next(query_titles),
                "similar": [
                    {"asin": a, "title": t, "score": round(s, 6)}
                    for a, t, s in zip(similar_asins, titles, row_scores)
                ],
            }
        )
    return answers


def _rows(values: list, width: int) -> list[list]:
    return [values[start : start + width] for start in range(0, len(values), width)]


def similar_cli(
    run: str, asins: list[str], file: str | None, k: int, cosine: bool, as_json: bool
) -> None:
    """The ``similar`` command: a readable table per asin, or JSON."""
    if file:
        try:
            asins = asins + [
                line.strip() for line in Path(file).read_text().splitlines() if line.strip()
            ]
        except OSError as exc:
            raise PipelineError(f"{file}: cannot read ({exc.strerror})") from None
    if not asins:
        raise PipelineError("give at least one ASIN, or --file")
    answers = similar(run, asins, k, cosine)
    if all("error" in a for a in answers):
        raise PipelineError("; ".join(_unknown(a) for a in answers))
    if as_json:
        print(json.dumps(answers, indent=2, ensure_ascii=False))
        return
    for answer in answers:
        if "error" in answer:
            print(_unknown(answer), file=sys.stderr)
            continue
        print(f"\n{answer['query']}  {_short(answer['title'])}")
        print(f"{'rank':>4}  {'asin':<12} {'score':>8}  title")
        for rank, item in enumerate(answer["similar"], 1):
            print(f"{rank:>4}  {item['asin']:<12} {item['score']:>8.4f}  {_short(item['title'])}")


def _unknown(answer: dict) -> str:
    hint = f"; close matches: {', '.join(answer['suggestions'])}" if answer["suggestions"] else ""
    return f"unknown ASIN {answer['query']}{hint}"


def _short(title: str | None, width: int = 70) -> str:
    if not title:
        return "(no title)"
    return title if len(title) <= width else title[: width - 1] + "…"

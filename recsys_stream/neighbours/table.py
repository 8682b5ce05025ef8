"""The batch job's product: a run's k best answers for every product (or user), in one file.

``similar_all`` writes, for every product of a run's vocabulary (or the
ones given), its k most similar products, never itself, scored as
``similar`` and the evaluation score them; ``recommend_all`` writes, for
every user of a ratings run (or the ones given), the k items of highest
predicted rating among those the user has not rated. Either searches
exactly (:mod:`.exact`) or with a saved faiss index (:mod:`.approximate`),
whose recall@k against the exact answer is measured on a sample of the
queries every time and written in the stats.

Rows are written a block of queries at a time, in query order, to a
temporary file renamed when complete; the stats JSON beside it is written
last, so a killed export leaves nothing that looks finished. The same run
gives the same file, whatever the thread count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pipeline.contracts import ITEMS, RATINGS, USERS
from pipeline.errors import PipelineError
from pipeline.files import atomic_output, write_json
from pipeline.memory import peak_rss_mb
from pipeline.progress import progress
from recsys_stream.core.runs import dataset_of
from recsys_stream.core.trained import load_run
from recsys_stream.neighbours import DEFAULT_INDEX, DEFAULT_TILE_SHARE, KINDS, METHODS, exact
from recsys_stream.neighbours.approximate import Approximate, Space
from recsys_stream.neighbours.exact import Exclusions

RECALL_QUERIES = 1000  # queries whose exact answer measures an index's recall
ROWS_PER_GROUP = 1 << 20  # output rows a Parquet row group holds
ANN_SCORES = 1 << 22  # found candidates a search call rescores at most
SEARCH_BLOCK = 8192  # queries a search call at most


@dataclass(frozen=True)
class Queries:
    """Who asks and what each may not get back."""

    ids: np.ndarray  # int64 ids of the query rows, in output order
    keys: pa.Array  # the key written for each query (asin, user key)
    exclusions: Exclusions


@dataclass(frozen=True)
class Layout:
    """How a block's answers become rows of a table."""

    names: tuple[str, ...]  # the columns
    candidates: pa.Array  # each candidate's key (asin, item key)
    titles: pa.Array  # each candidate's title
    query_titles: pa.Array | None  # each query's title, in query order; None: no column
    shown: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (query ids, found
    # ids, ranking scores) to the score column
    what: str  # "products" or "users": the progress bar's unit, the stats' rate


def similar_all(
    run: str | os.PathLike,
    k: int = 10,
    out: str | os.PathLike | None = None,
    method: str = "exact",
    index: str = DEFAULT_INDEX,
    asins: list[str] | None = None,
    cosine: bool = False,
    quiet: bool = False,
    tile_share: float = DEFAULT_TILE_SHARE,
) -> dict:
    """Write RUN/similar.parquet (or ``out``): asin, rank, similar_asin, score, title,
    similar_title; k rows a product. Returns the stats, also written beside it."""
    from recsys_stream.similar import Index

    run = Path(run)
    _check(k, method, index, tile_share)
    found = Index(run)
    cosine = cosine or found.cosine_only
    key = "item" if found.cosine_only else "asin"
    ids = _ids_of(found, asins)
    space = Space(found.queries, found.candidates, None if cosine else found.bias, cosine)
    queries = Queries(ids, found.asins.take(pa.array(ids)), Exclusions.own(ids))
    titles = found.vocab.read(columns=["title"]).column("title")
    own = (
        found.bias.detach().numpy()
        if found.bias is not None and not cosine
        else np.zeros(len(found.candidates), np.float32)
    )
    offset = 0.0 if cosine else float(torch.as_tensor(found.offset).detach())

    def shown(query_ids: np.ndarray, _found: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The probability that the pair is related (the cosine for --cosine)."""
        if cosine:
            return values
        return 1 / (1 + np.exp(-(values + own[query_ids][:, None] + offset)))

    layout = Layout(
        (key, "rank", f"similar_{key}", "score", "title", "similar_title"),
        found.asins,
        titles,
        titles.take(pa.array(ids)),
        shown,
        "products",
    )
    out = out or run / "similar.parquet"
    return _export(run, space, queries, k, out, (method, index, tile_share), quiet, layout)


def recommend_all(
    run: str | os.PathLike,
    k: int = 10,
    out: str | os.PathLike | None = None,
    method: str = "exact",
    index: str = DEFAULT_INDEX,
    users: list[str] | None = None,
    quiet: bool = False,
    tile_share: float = DEFAULT_TILE_SHARE,
) -> dict:
    """Write RUN/recommend.parquet (or ``out``): user, rank, item, predicted, title; for
    each user the k items of highest predicted rating among those not rated (in train
    or val). Returns the stats, also written beside it."""
    from recsys_stream.ratings.task import predict

    run = Path(run)
    _check(k, method, index, tile_share)
    trained = load_run(run, current=True)
    model, _, saved = trained
    if trained.kind != "ratings":
        raise PipelineError(f"{run}: recommend --all takes a run of a rating model")
    ranking = model.ranking()
    if ranking is None:
        from recsys_stream.ratings.models import RATING_MODELS, RatingModel

        searchable = [n for n, c in RATING_MODELS.items() if c.ranking is not RatingModel.ranking]
        raise PipelineError(
            f"{run}: {trained.config.model} predicts through more than a product of user and "
            f"item vectors, so there is nothing to search; recommend --all takes "
            f"{', '.join(searchable)}"
        )
    with torch.no_grad():
        space = Space(*(None if t is None else t.detach().clone() for t in ranking), False)
    data = dataset_of(run)
    user_keys = pq.read_table(data / USERS, columns=["key"]).column("key")
    ids = np.arange(len(user_keys)) if users is None else _keys_to_ids(user_keys, users, "user")
    items = pq.read_table(data / ITEMS, columns=["key", "title"])
    exclusions = rated_by(data / RATINGS, len(user_keys)).take(ids)
    queries = Queries(ids, user_keys.take(pa.array(ids)), exclusions)

    def shown(query_ids: np.ndarray, found: np.ndarray, _values: np.ndarray) -> np.ndarray:
        """The model's own predicted ratings, clipped to the train range."""
        users = np.repeat(query_ids, found.shape[1])
        predicted = predict(model, users, np.maximum(found.ravel(), 0), *saved_range)
        return predicted.reshape(found.shape)

    saved_range = (saved["low"], saved["high"])
    layout = Layout(
        ("user", "rank", "item", "predicted", "title"),
        items.column("key"),
        items.column("title"),
        None,
        shown,
        "users",
    )
    out = out or run / "recommend.parquet"
    return _export(run, space, queries, k, out, (method, index, tile_share), quiet, layout)


def _export(
    run: Path,
    space: Space,
    queries: Queries,
    k: int,
    out: str | os.PathLike,
    search: tuple[str, str, float],
    quiet: bool,
    layout: Layout,
) -> dict:
    """Search, write the table a block at a time, measure recall, write the stats.
    ``search``: the method, faiss index and tile share asked for."""
    method, index, tile_share = search
    out = Path(out)
    began = time.perf_counter()
    width = min(k, len(space.candidates))
    if method == "ann":
        searched = _ann_blocks(run, space, queries, width, index)
    else:
        searched = _exact_blocks(space, queries, width, tile_share if method == "tiles" else 1)
    rows = 0
    sample = _sample(len(queries.ids)) if method != "exact" else np.zeros(0, np.int64)
    sampled = np.empty((len(sample), width), np.int64)  # the table's answers to the sample
    command = "similar" if layout.what == "products" else "recommend"
    bar = progress(len(queries.ids), layout.what, f"{command} --all", quiet)
    with atomic_output(out) as tmp, bar:
        writer = None
        pending: list[pa.Table] = []
        for start, found, values in searched:
            table = _rows(layout, queries, start, found, values)
            here = (sample >= start) & (sample < start + len(found))
            sampled[here] = found[sample[here] - start]
            rows += len(table)
            pending.append(table)
            if sum(map(len, pending)) >= ROWS_PER_GROUP:
                writer = _write(writer, tmp, pending)
            bar.update(len(found))
        writer = _write(writer, tmp, pending, schema=_schema(layout.names))
        writer.close()
    seconds = time.perf_counter() - began
    stats = {
        "run": str(run),
        "method": method,
        "index": index if method == "ann" else None,
        "tile_share": tile_share if method == "tiles" else None,
        "k": width,
        "queries": len(queries.ids),
        "rows": rows,
        "short_rows": len(queries.ids) * width - rows,
        "seconds": round(seconds, 2),
        f"{layout.what}_per_s": round(len(queries.ids) / seconds, 1) if seconds else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if method != "exact":
        stats |= _recall(space, queries, width, sample, sampled)
    write_json(out.with_suffix(".json"), stats)
    return stats


def _exact_blocks(
    space: Space, queries: Queries, k: int, tile_share: float = 1.0
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The blocks of :func:`exact.blocks`, exact unless ``tile_share`` < 1."""
    searched = _searchable(space)
    yield from exact.blocks(
        searched.queries[queries.ids],
        searched.candidates,
        k,
        searched.bias,
        queries.exclusions,
        tile_share=tile_share,
    )


def _ann_blocks(
    run: Path, space: Space, queries: Queries, k: int, kind: str
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    index = Approximate.of_run(run, _searchable(space), kind)
    extra = int(np.diff(queries.exclusions.offsets).max(initial=0))
    block = max(1, min(SEARCH_BLOCK, ANN_SCORES // (k + extra)))
    for start in range(0, len(queries.ids), block):
        stop = min(start + block, len(queries.ids))
        found, values = index.search(
            queries.ids[start:stop], k, queries.exclusions.block(start, stop)
        )
        yield start, found, values


def _sample(queries: int) -> np.ndarray:
    """The positions of the queries whose answers measure recall: a seeded sample."""
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(queries, min(RECALL_QUERIES, queries), replace=False))


def _recall(
    space: Space, queries: Queries, k: int, sample: np.ndarray, answered: np.ndarray
) -> dict:
    """recall@k of the table's answers to the sampled queries against the exact ones."""
    picked = Queries(
        queries.ids[sample], queries.keys.take(pa.array(sample)), queries.exclusions.take(sample)
    )
    truth = np.concatenate(
        [np.empty((0, k), np.int64)] + [found for _, found, _ in _exact_blocks(space, picked, k)]
    )
    hits = _shared(truth, answered)
    wanted = int((truth >= 0).sum())
    return {
        "recall_at_k": round(hits / wanted, 4) if wanted else None,
        "recall_queries": len(sample),
    }


def _shared(truth: np.ndarray, found: np.ndarray) -> int:
    """How many of each row's true ids (not -1) the found row holds, summed."""
    real = truth >= 0
    return int(((truth[:, :, None] == found[:, None, :]).any(2) & real).sum())


def _searchable(space: Space) -> Space:
    """The space an index is built for: unit vectors for cosine."""
    if not space.cosine:
        return space
    return Space(_unit(space.queries), _unit(space.candidates), None, True)


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors.detach().float(), dim=1)


def _rows(
    layout: Layout, queries: Queries, start: int, found: np.ndarray, values: np.ndarray
) -> pa.Table:
    """The rows of the block of queries from ``start``: a row per (query, found
    candidate), padding (-1) left out."""
    query_ids = queries.ids[start : start + len(found)]
    shown = layout.shown(query_ids, found, values)
    real = found >= 0
    owner = pa.array(np.repeat(np.arange(len(found)), real.sum(1)))
    rank = np.broadcast_to(np.arange(1, found.shape[1] + 1, dtype=np.int16), found.shape)[real]
    chosen = pa.array(found[real])
    columns = [
        queries.keys.slice(start, len(found)).take(owner),
        pa.array(rank),
        layout.candidates.take(chosen),
        pa.array(shown[real].astype(np.float32)),
    ]
    if layout.query_titles is not None:
        columns.append(layout.query_titles.slice(start, len(found)).take(owner))
    columns.append(layout.titles.take(chosen))
    return pa.Table.from_arrays(columns, schema=_schema(layout.names))


def _schema(names: tuple[str, ...]) -> pa.Schema:
    types = {"rank": pa.int16(), "score": pa.float32(), "predicted": pa.float32()}
    return pa.schema([(name, types.get(name, pa.string())) for name in names])


def _write(writer, path: Path, pending: list[pa.Table], schema: pa.Schema | None = None):
    """Write the pending tables as one row group (opening the file on first use)."""
    if writer is None:
        writer = pq.ParquetWriter(path, schema or pending[0].schema)
    if pending:
        writer.write_table(pa.concat_tables(pending), row_group_size=ROWS_PER_GROUP)
        pending.clear()
    return writer


def _check(k, method: str, index: str, tile_share: float) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise PipelineError(f"-k must be at least 1, got {k!r}")
    if method not in METHODS:
        raise PipelineError(f"unknown --method {method!r}: choose from {', '.join(METHODS)}")
    if index not in KINDS:
        raise PipelineError(f"unknown --index {index!r}: choose from {', '.join(KINDS)}")
    if not 0 < tile_share <= 1:
        raise PipelineError(f"--tile-share must be above 0 and at most 1, got {tile_share}")


def _ids_of(found, asins: list[str] | None) -> np.ndarray:
    if asins is None:
        return np.arange(len(found.asins), dtype=np.int64)
    ids = found.ids(asins)
    return _known(ids, asins, "ASIN")


def _keys_to_ids(keys: pa.Array, wanted: list[str], what: str) -> np.ndarray:
    ids = pc.index_in(pa.array(wanted, pa.string()), value_set=keys.cast(pa.string()))
    return _known(ids.fill_null(-1).to_numpy().astype(np.int64), wanted, what)


def _known(ids: np.ndarray, asked: list[str], what: str) -> np.ndarray:
    unknown = [key for key, id_ in zip(asked, ids) if id_ < 0]
    if unknown:
        shown = ", ".join(repr(key) for key in unknown[:3])
        raise PipelineError(
            f"{len(unknown)} unknown {what}{'s' if len(unknown) > 1 else ''} of {len(asked)} "
            f"asked ({shown}{', ...' if len(unknown) > 3 else ''}): not in the run's vocabulary"
        )
    return ids


def rated_by(ratings: Path, users: int) -> Exclusions:
    """Each user's rated items, ascending, read from ratings.parquet a row group at a
    time: a count per user first, then the items placed in their users' slices."""
    file = pq.ParquetFile(ratings)
    counts = np.zeros(users, np.int64)
    for group in range(file.num_row_groups):
        user = file.read_row_group(group, columns=["user"]).column("user").to_numpy()
        counts += np.bincount(user, minlength=users)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    items = np.empty(offsets[-1], np.int64)
    cursor = offsets[:-1].copy()
    for group in range(file.num_row_groups):
        table = file.read_row_group(group, columns=["user", "item"])
        _place(table.column("user").to_numpy(), table.column("item").to_numpy(), cursor, items)
    _sort_slices(items, offsets)
    return Exclusions(offsets, items)


@numba.njit(nogil=True, cache=True)
def _place(users, items, cursor, out):  # pragma: no cover
    for row in range(len(users)):
        out[cursor[users[row]]] = items[row]
        cursor[users[row]] += 1


@numba.njit(nogil=True, cache=True)
def _sort_slices(values, offsets):  # pragma: no cover
    for row in range(len(offsets) - 1):
        values[offsets[row] : offsets[row + 1]].sort()

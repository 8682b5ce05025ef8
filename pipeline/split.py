"""Stage 3: split pairs.parquet into shuffled train pairs and labelled val pairs.

The pairs are put in a seeded random order, by :func:`shuffle_keys`; the
first ``floor(pairs * val_prop + 0.5)`` are the val positives and the rest the
train pairs. Writes ``train.parquet`` (TRAIN_SCHEMA: the train pairs in that
order, so a sequential read is already shuffled, in row groups of
ROW_GROUP_ROWS that the trainer shards between DataLoader workers),
``val.parquet`` (VAL_SCHEMA: the val positives and as many negatives, sorted
by (src, dst); ``label`` 1/0, ``weight`` 0 for negatives, ``seen`` when both
products occur in train; the negative protocol in its metadata) and
``split.json`` (counts, seen shares, the negative candidates examined and
rejected by reason, the shuffles of negative sampling as ``rounds``, options,
seconds and peak RSS).

Two protocols for the val negatives (``negatives``), both by the reference's
shuffle-slice trick and both excluding every true pair:

- ``products`` (the reference's, the default): the deck is the set of distinct
  val products, each equally likely. A popular product is as rare among
  negatives as an obscure one, so popularity alone tells many negatives from
  positives: AUCs comparable with the article's and with tools that follow it.
- ``occurrences``: the deck is both ends of every val positive, so a product is
  drawn as often as it occurs in val and negatives share the positives'
  popularity: popularity alone scores about 0.5, and only what a model knows
  beyond popularity counts.

Same input and seed give byte-identical Parquet files; the order of the input
rows does not matter (the order is a hash of each pair and the seed).

Memory: the four pair columns and one int64 key per pair (21 bytes a pair,
560 MB for Books' 26.6M pairs) plus temporaries of the same order, the
columns freed once the val rows are taken; the peak was 1.33 GB on a
synthetic pair set of Books' size (tests/bench/bench_split.py). On Spark the
driver holds the keys alone (8 bytes a pair) and the val positives.

Over 400 lines, as one job: the order, the negatives and the val file share
this module's constants, which the tests tune here (ROW_GROUP_ROWS,
MAX_ROUNDS, MIN_CHUNK); reading the pairs is split_inputs.py's.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.cli import check_seed
from pipeline.contracts import (
    PAIRS,
    PAIRS_SCHEMA,
    SPLIT_STATS,
    TRAIN,
    TRAIN_SCHEMA,
    VAL,
    VAL_SCHEMA,
    VOCAB,
    VOCAB_SCHEMA,
    check_lineage,
    lineage_id,
    require,
    stamped,
    vocabulary_size,
)
from pipeline.errors import PipelineError
from pipeline.options import EngineOptions, argument, option, seed_option
from pipeline.progress import progress
from pipeline.spark import check_engine, session
from pipeline.split_inputs import load_keys, load_pairs
from pipeline.stage import StageRun

NEGATIVE_PROTOCOLS = ("products", "occurrences")
ROW_GROUP_ROWS = 262_144  # rows per row group of train and val
# Negative sampling gives up after MAX_ROUNDS times the shuffles it would need
# if no candidate were rejected.
MAX_ROUNDS = 100
MIN_CHUNK = 65_536  # candidates checked at once when topping up
REJECT_REASONS = ("self_pair", "true_pair", "duplicate")
_WORD = (1 << 64) - 1


@dataclass(frozen=True, kw_only=True)
class SplitOptions(EngineOptions):
    """The arguments of ``python -m pipeline split``: :func:`split`'s."""

    data_dir: str = argument(
        "dataset directory holding pairs.parquet and vocab.parquet", metavar="dir"
    )
    val_prop: float = option(0.33, "share of the pairs held out for validation", above=0, below=1)
    negatives: str = option(
        "products",
        "val negatives from the distinct val products, each equally likely (the "
        "reference's), or from their occurrences, matching the positives' popularity",
        choices=NEGATIVE_PROTOCOLS,
    )
    seed: int = seed_option()


@dataclass(frozen=True)
class SplitRun:
    """What split's Spark runner takes: the pairs, the seed and sizes, the train file
    to write (a temporary, and its stamped schema), a work folder and the progress bar."""

    pairs: Path
    seed: int
    n_val: int
    n_products: int
    train_path: Path
    train_schema: pa.Schema
    work: Path
    bar: tqdm


@dataclass(frozen=True)
class SplitOff:
    """An engine's split, train written: the val positives in (src, dst) order, which
    products occur in train (a bool per id) and the train pairs written."""

    val_src: np.ndarray
    val_dst: np.ndarray
    val_weight: np.ndarray
    in_train: np.ndarray
    n_train: int


def split(
    data_dir: str | os.PathLike,
    val_prop: float = SplitOptions.val_prop,
    seed: int = SplitOptions.seed,
    negatives: str = SplitOptions.negatives,
    quiet: bool = SplitOptions.quiet,
    engine: str = SplitOptions.engine,
    spark_master: str | None = SplitOptions.spark_master,
) -> dict:
    """Split ``data_dir``'s pairs into train and val files; return the stats.

    A seeded random ``val_prop`` share of the pairs goes to val; each val
    positive gets one negative, drawn under the ``negatives`` protocol (see
    the module doc and :func:`sample_negatives`). The protocol changes only
    the negatives: train and the val positives depend on the seed alone. A val row is
    ``seen`` when both of its products occur in a train pair, for positives
    and negatives alike, so AUC over seen rows has both classes.
    ``engine`` "spark" sorts the pairs into their order on Spark at
    ``spark_master`` (split_spark.py): the same files and counts.
    """
    data_dir = Path(data_dir)
    if not 0 < val_prop < 1:  # also refuses NaN
        raise PipelineError(f"--val-prop must be between 0 and 1 (exclusive), got {val_prop}")
    seed = check_seed(seed)
    if negatives not in NEGATIVE_PROTOCOLS:
        raise PipelineError(
            f"--negatives must be one of {', '.join(NEGATIVE_PROTOCOLS)}, got {negatives!r}"
        )
    check_engine(engine)
    with StageRun(data_dir, SPLIT_STATS) as run:
        pairs_file = require(data_dir / PAIRS, PAIRS_SCHEMA)
        vocab_file = require(data_dir / VOCAB, VOCAB_SCHEMA)
        pairs_id = check_lineage("pairs_id", data_dir / PAIRS, data_dir / VOCAB)
        split_id = lineage_id("split", pairs_id, val_prop, int(seed), negatives)
        lineage = {"pairs_id": pairs_id, "split_id": split_id}

        n_products = vocabulary_size(vocab_file, data_dir / VOCAB)
        if engine == "spark":  # the driver holds the keys alone; Spark holds the pairs
            keys = load_keys(pairs_file, data_dir / PAIRS, n_products)
        else:
            src, dst, weight, relations, keys = load_pairs(pairs_file, data_dir / PAIRS, n_products)
        n_pairs = len(keys)
        n_val = validation_size(n_pairs, val_prop)
        if n_val == 0 or n_val == n_pairs:
            empty = "val" if n_val == 0 else "train"
            raise PipelineError(
                f"{data_dir / PAIRS}: --val-prop {val_prop} of {n_pairs} pairs leaves {empty} empty"
            )

        val_schema = stamped(VAL_SCHEMA, "split", negatives=negatives, **lineage)
        train_schema = stamped(TRAIN_SCHEMA, "split", **lineage)
        train_tmp, val_tmp = run.output(TRAIN), run.output(VAL)
        with (
            progress(n_pairs + n_val, "rows", "split write", quiet) as bar,
            contextlib.ExitStack() as stack,
        ):
            if engine == "spark":
                from pipeline.split_spark import split_on_spark

                job = SplitRun(
                    pairs=data_dir / PAIRS,
                    seed=seed,
                    n_val=n_val,
                    n_products=n_products,
                    train_path=train_tmp,
                    train_schema=train_schema,
                    work=run.work("split-work"),
                    bar=bar,
                )
                split_off = split_on_spark(stack.enter_context(session(spark_master, quiet)), job)
            else:
                order = np.argsort(shuffle_keys(src, dst, seed))  # the seeded order of train
                train_rows = order[n_val:]
                val_rows = np.sort(order[:n_val])  # in (src, dst) order
                del order
                in_train = np.zeros(n_products, dtype=bool)
                in_train[src[train_rows]] = True
                in_train[dst[train_rows]] = True
                _write_train(train_tmp, src, dst, weight, relations, train_rows, train_schema, bar)
                split_off = SplitOff(
                    src[val_rows], dst[val_rows], weight[val_rows], in_train, len(train_rows)
                )
                del train_rows, val_rows, src, dst, weight, relations
            val_src, val_dst, n_train = split_off.val_src, split_off.val_dst, split_off.n_train

            occurrences = np.concatenate([val_src, val_dst])
            _check_feasible(occurrences, keys, n_products, n_val, data_dir / PAIRS)
            deck = np.unique(occurrences) if negatives == "products" else occurrences
            rng = np.random.default_rng(seed)
            neg_src, neg_dst, sampling = sample_negatives(deck, keys, n_products, n_val, rng)
            sampling["val_products"] = int(np.count_nonzero(np.bincount(occurrences)))
            del occurrences, deck, keys

            val = _val_table(split_off, neg_src, neg_dst, n_products, val_schema)
            seen = val.column("seen").to_numpy()
            positive = val.column("label").to_numpy() == 1
            _write_table(val_tmp, val, val_schema, bar)

        seconds = run.seconds
        seen_positives = int(np.count_nonzero(seen & positive))
        seen_negatives = int(np.count_nonzero(seen & ~positive))
        stats = {
            "data_dir": str(data_dir),
            "pairs": n_pairs,
            "products": n_products,
            "train": n_train,
            "val_positives": n_val,
            "val_negatives": len(neg_src),
            "negatives": negatives,
            "val_products": sampling["val_products"],
            "seen_positives": seen_positives,
            "seen_negatives": seen_negatives,
            "seen_share_positives": round(seen_positives / n_val, 6),
            "seen_share_negatives": round(seen_negatives / len(neg_src), 6),
            "candidates": sampling["candidates"],
            "rejected": {reason: sampling[reason] for reason in REJECT_REASONS},
            "rounds": sampling["rounds"],
            "val_prop": val_prop,
            "seed": int(seed),
            "engine": engine,
            **lineage,
            "row_group_rows": ROW_GROUP_ROWS,
            "seconds": round(seconds, 2),
            "pairs_per_s": round(n_pairs / max(seconds, 1e-9)),
        }
        run.finish(stats)
    return run.stats


def shuffle_keys(src: np.ndarray, dst: np.ndarray, seed: int) -> np.ndarray:
    """Each pair's place in the seeded shuffle: a seeded hash of (src, dst), as int64.

    The hash is SplitMix64's mixer of ``src << 32 | dst`` plus a multiple of
    the seed: a bijection of 64-bit words, so distinct pairs never tie and
    sorting by it is a random order that depends on nothing but the pairs and
    the seed. Both engines sort by it (Spark through this very function).
    """
    z = (src.astype(np.uint64) << np.uint64(32)) | dst.astype(np.uint64)
    z += np.uint64((int(seed) * 0x9E3779B97F4A7C15) & _WORD)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z.view(np.int64)


def validation_size(n_pairs: int, val_prop: float) -> int:
    """Val positives out of ``n_pairs``: the nearest integer to n * val_prop, halves up."""
    return math.floor(n_pairs * val_prop + 0.5)


def sample_negatives(
    deck: np.ndarray,
    pair_keys: np.ndarray,
    n_products: int,
    count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``count`` distinct non-pairs (src < dst) drawn from ``deck``; plus a tally.

    The reference's shuffle-slice trick: shuffle ``deck`` (product ids: the
    distinct val products, or every occurrence of one, see the module doc),
    read consecutive slices of two as candidates, and reshuffle when the
    deck is exhausted. Candidates that are self-pairs, true pairs (their key
    ``src * n_products + dst`` is in the sorted ``pair_keys``) or repeats of
    an earlier accepted candidate are rejected, until ``count`` are accepted.
    The candidates are a stream checked in vectorised chunks; which are
    accepted does not depend on the chunk size. It fails in one line after
    MAX_ROUNDS times the shuffles that ``count`` needs without rejections.

    The tally counts the candidates examined, the rejections by reason and
    the shuffles (``rounds``).
    """
    tally = dict.fromkeys(("candidates", *REJECT_REASONS, "rounds"), 0)
    per_round = len(deck) // 2
    if count and not per_round:
        raise PipelineError(f"{count} val negatives needed but there are no val products")
    max_rounds = MAX_ROUNDS * max(1, math.ceil(count / max(per_round, 1)))
    deck = deck.copy()
    accepted: list[np.ndarray] = []
    taken = np.empty(0, dtype=np.int64)  # sorted keys accepted so far
    need, position = count, per_round  # start with an exhausted deck: shuffle first
    while need > 0:
        if position == per_round:
            if tally["rounds"] == max_rounds:
                raise PipelineError(
                    f"negative sampling found {count - need} of {count} negatives in "
                    f"{max_rounds} shuffles of {len(deck)} val products; "
                    "the val products have too few non-pairs (lower --val-prop)"
                )
            rng.shuffle(deck)
            position = 0
            tally["rounds"] += 1
        end = min(per_round, position + max(2 * need, MIN_CHUNK))
        a = deck[2 * position : 2 * end : 2]
        b = deck[2 * position + 1 : 2 * end : 2]
        position = end
        low = np.minimum(a, b).astype(np.int64)
        high = np.maximum(a, b)
        keys = low * n_products + high
        self_pair = low == high
        # Checked in key order: binary searches with sorted needles stay in
        # cache, and a stable sort puts a key's first occurrence first.
        by_key = np.argsort(keys, kind="stable")
        ordered = keys[by_key]
        first = np.empty(len(keys), dtype=bool)
        first[by_key] = np.concatenate([[True], ordered[1:] != ordered[:-1]])
        true_pair = np.empty(len(keys), dtype=bool)
        true_pair[by_key] = _contains(pair_keys, ordered)  # never a self-pair: src < dst
        earlier = np.empty(len(keys), dtype=bool)
        earlier[by_key] = _contains(taken, ordered)
        del by_key, ordered
        # Equal keys are equally self or true pairs, so a first occurrence
        # among all candidates is a first occurrence among the fresh ones.
        fresh = ~(self_pair | true_pair)
        duplicate = fresh & (~first | earlier)
        ok = fresh & ~duplicate
        running = np.cumsum(ok)
        if running[-1] > need:  # stop at the candidate that completes the count
            cut = int(np.searchsorted(running, need)) + 1
            keys, ok = keys[:cut], ok[:cut]
            self_pair, true_pair, duplicate = self_pair[:cut], true_pair[:cut], duplicate[:cut]
        tally["candidates"] += len(keys)
        tally["self_pair"] += int(np.count_nonzero(self_pair))
        tally["true_pair"] += int(np.count_nonzero(true_pair))
        tally["duplicate"] += int(np.count_nonzero(duplicate))
        new = keys[ok]
        accepted.append(new)
        taken = np.sort(np.concatenate([taken, new]))
        need -= len(new)
    keys = np.concatenate(accepted) if accepted else np.empty(0, dtype=np.int64)
    return (keys // n_products).astype(np.int32), (keys % n_products).astype(np.int32), tally


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Whether each of ``keys`` is in ``sorted_keys`` (binary search, no hashing)."""
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=bool)
    at = np.searchsorted(sorted_keys, keys)
    np.minimum(at, len(sorted_keys) - 1, out=at)
    return sorted_keys[at] == keys


def _check_feasible(
    occurrences: np.ndarray, pair_keys: np.ndarray, n_products: int, count: int, path: Path
) -> None:
    """Fail at once when the val products have fewer than ``count`` non-pairs.

    Cheaper and clearer than exhausting MAX_ROUNDS shuffles when the request
    is impossible; MAX_ROUNDS still bounds the feasible-but-unlucky case.
    The pairs are counted from their keys a chunk at a time.
    """
    in_val = np.zeros(n_products, dtype=bool)
    in_val[occurrences] = True
    products = int(np.count_nonzero(in_val))
    true_pairs = 0
    for start in range(0, len(pair_keys), ROW_GROUP_ROWS):
        chunk = pair_keys[start : start + ROW_GROUP_ROWS]
        true_pairs += int(
            np.count_nonzero(in_val[chunk // n_products] & in_val[chunk % n_products])
        )
    non_pairs = products * (products - 1) // 2 - true_pairs
    if non_pairs < count:
        raise PipelineError(
            f"{path}: the {products} val products form only {non_pairs} non-pairs, "
            f"fewer than the {count} val negatives needed; lower --val-prop"
        )


def _val_table(
    positives: SplitOff,
    neg_src: np.ndarray,
    neg_dst: np.ndarray,
    n_products: int,
    schema: pa.Schema,
) -> pa.Table:
    """Positives and negatives in one table sorted by (src, dst), with labels and seen."""
    src = np.concatenate([positives.val_src, neg_src])
    dst = np.concatenate([positives.val_dst, neg_dst])
    order = np.argsort(src.astype(np.int64) * n_products + dst, kind="stable")
    n_pos = len(positives.val_src)
    label = np.zeros(len(src), dtype=np.int8)
    label[:n_pos] = 1
    weight = np.zeros(len(src), dtype=np.float32)
    weight[:n_pos] = positives.val_weight
    src, dst, label, weight = src[order], dst[order], label[order], weight[order]
    seen = positives.in_train[src] & positives.in_train[dst]
    return pa.table([src, dst, label, weight, seen], schema=schema)


def _write_train(
    path: Path,
    src: np.ndarray,
    dst: np.ndarray,
    weight: np.ndarray,
    relations: np.ndarray,
    rows: np.ndarray,
    schema: pa.Schema,
    bar,
) -> None:
    """Write the pairs at ``rows``, in that order, one row group per ROW_GROUP_ROWS."""
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, len(rows), ROW_GROUP_ROWS):
            take = rows[start : start + ROW_GROUP_ROWS]
            columns = [src[take], dst[take], weight[take], relations[take]]
            writer.write_table(pa.table(columns, schema=schema), row_group_size=ROW_GROUP_ROWS)
            bar.update(len(take))


def _write_table(path: Path, table: pa.Table, schema: pa.Schema, bar) -> None:
    """Write ``table`` in row groups of ROW_GROUP_ROWS."""
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, table.num_rows, ROW_GROUP_ROWS):
            part = table.slice(start, ROW_GROUP_ROWS)
            writer.write_table(part, row_group_size=ROW_GROUP_ROWS)
            bar.update(part.num_rows)

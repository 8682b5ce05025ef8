"""split's input: the pairs, read and checked (ids in the vocabulary, src < dst, no
repeats), as columns or as the sorted keys ``src * V + dst`` alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.contracts import PAIRS_SCHEMA, made_by
from pipeline.errors import PipelineError


def load_keys(parquet: pq.ParquetFile, path: Path, n_products: int) -> np.ndarray:
    """The pairs' keys (src * V + dst), sorted; checked as load_pairs checks them, one
    row group at a time, so only the keys are ever whole."""
    if parquet.metadata.num_rows == 0:
        raise PipelineError(f"{path}: no pairs; nothing to split")
    parts = []
    for index in range(parquet.num_row_groups):
        group = parquet.read_row_group(index, columns=["src", "dst"])
        src, dst = (group.column(name).to_numpy() for name in ("src", "dst"))
        check_ids(src, dst, path, n_products)
        parts.append(src.astype(np.int64) * n_products + dst)
    keys = np.concatenate(parts)
    del parts
    return sorted_distinct(keys, path)


def check_ids(src: np.ndarray, dst: np.ndarray, path: Path, n_products: int) -> None:
    """Refuse ids outside the vocabulary and pairs with src >= dst."""
    if len(src) and (src.min() < 0 or dst.max() >= n_products):
        raise PipelineError(
            f"{path}: product ids outside the vocabulary 0..{n_products - 1}; "
            f"rerun `{made_by(path)}`"
        )
    if np.any(src >= dst):
        raise PipelineError(f"{path}: pairs with src >= dst; rerun `{made_by(path)}`")


def sorted_distinct(keys: np.ndarray, path: Path) -> np.ndarray:
    """``keys`` sorted (they are, from the pairs stage); refuses repeated pairs."""
    if np.any(keys[1:] <= keys[:-1]):
        keys = np.sort(keys)
        if np.any(keys[1:] == keys[:-1]):
            raise PipelineError(f"{path}: repeated pairs; rerun `{made_by(path)}`")
    return keys


def load_pairs(parquet: pq.ParquetFile, path: Path, n_products: int) -> tuple[np.ndarray, ...]:
    """src, dst, weight, relations and keys (src * V + dst), sorted by key; checked.

    Columns are read one at a time so the Arrow copy of only one is alive.
    """
    if parquet.metadata.num_rows == 0:
        raise PipelineError(f"{path}: no pairs; nothing to split")
    src, dst, weight, relations = (
        parquet.read(columns=[name]).column(0).to_numpy() for name in PAIRS_SCHEMA.names
    )
    check_ids(src, dst, path, n_products)
    keys = src.astype(np.int64) * n_products + dst
    if np.any(keys[1:] <= keys[:-1]):  # not sorted by (src, dst): sort (and then find repeats)
        order = np.argsort(keys, kind="stable")
        keys, src, dst, weight, relations = (
            column[order] for column in (keys, src, dst, weight, relations)
        )
        del order
        if np.any(keys[1:] == keys[:-1]):
            raise PipelineError(f"{path}: repeated pairs; rerun `{made_by(path)}`")
    return src, dst, weight, relations, keys

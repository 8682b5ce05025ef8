"""Progress bars with throughput on stderr, silenced by ``--quiet``."""

from __future__ import annotations

from tqdm import tqdm


def progress(total: int | None, unit: str, desc: str, quiet: bool) -> tqdm:
    """A tqdm bar counting ``unit``s (scaled to k/M for bytes and rows)."""
    return tqdm(
        total=total,
        unit=unit,
        desc=desc,
        disable=quiet,
        unit_scale=True,
        unit_divisor=1024 if unit == "B" else 1000,
        dynamic_ncols=True,
        mininterval=0.5,
    )

"""The pair steps side by side: the compiled kernel against the torch fused step.

    python tests/bench/bench_steps.py --products 100000 --dims 32,128 --repeats 3

One step of MF with bias (binary labels, batches of 2,048 anchors with a
positive and 5 per-row negatives, L2 on the touched rows, Adam), taken by
the step classes training uses (``pairs.kernel_step.KernelStep``,
``pairs.steps.FusedStep``) on one thread and on two, from the same batches
of uniformly drawn products (no stream: the step alone). The runs of a
repeat follow each other, so that a drift of the machine's speed shows as
the spread between repeats rather than as a difference between steps.
Prints one JSON line per step, thread count and repeat.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from recsys_stream.core.losses import LOSSES
from recsys_stream.pairs.kernel_step import KernelStep
from recsys_stream.pairs.models import build_model
from recsys_stream.pairs.steps import FusedStep
from recsys_stream.pairs.stream import Batch

ANCHORS, NEGATIVES, LR, L2 = 2048, 5, 0.01, 1e-4
STEPS = {"kernel": KernelStep, "fused": FusedStep}
WARMUP = 20  # steps before the clock starts (the JIT, the buffers, the caches)


def batches(products: int, steps: int) -> list[Batch]:
    rng = np.random.default_rng(0)
    weight = torch.ones(ANCHORS)
    return [
        Batch(
            torch.from_numpy(rng.integers(0, products, ANCHORS)),
            torch.from_numpy(rng.integers(0, products, (ANCHORS, 1 + NEGATIVES))),
            weight,
        )
        for _ in range(steps)
    ]


def samples_per_s(kind: str, threads: int, products: int, dim: int, steps: list) -> float:
    """One fresh model trained over ``steps`` by the ``kind`` step on ``threads``."""
    model = build_model("mf_bias", products, dim, 0.01, 1)
    step = STEPS[kind](model, LOSSES["binary"], L2, 1.0)
    torch.set_num_threads(threads)
    if hasattr(step, "set_threads"):
        step.set_threads(threads)
    for batch in steps[:WARMUP]:
        step(batch, LR)
    started = time.perf_counter()
    for batch in steps[WARMUP:]:
        step(batch, LR)
    return (len(steps) - WARMUP) * ANCHORS * (1 + NEGATIVES) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--dims", default="32,128")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    steps = batches(args.products, args.steps)
    for dim in (int(d) for d in args.dims.split(",")):
        for repeat in range(args.repeats):
            for kind in STEPS:
                for threads in (1, 2):
                    rate = samples_per_s(kind, threads, args.products, dim, steps)
                    line = {
                        "step": kind,
                        "threads": threads,
                        "products": args.products,
                        "dim": dim,
                        "repeat": repeat,
                        "samples_per_s": round(rate),
                    }
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

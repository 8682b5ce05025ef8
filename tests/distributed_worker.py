"""One rank of the data-parallel tests, run under torchrun by tests/test_distributed.py.

    python -m torch.distributed.run --standalone --nproc-per-node 2 \
        tests/distributed_worker.py MODE OUT [DATA]

``gradients``: each rank takes a batch of its own; rank 0 saves the summed
rows of :func:`recsys_stream.core.distributed.combine` and the gradients of the
union batch on one process, to OUT/gradients.pt.
``train``: trains DATA for 2 epochs (run ``ranks``); every rank saves its
final model to OUT/rank-R.pt, so the test can compare the replicas.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from recsys_stream.core import distributed, runs
from recsys_stream.core import train as training
from recsys_stream.core.losses import LOSSES
from recsys_stream.core.optim import DistinctRows
from recsys_stream.pairs.models import build_model
from recsys_stream.pairs.steps import FusedStep
from recsys_stream.pairs.stream import Batch

TRAIN = {"epochs": 2, "lr": 0.05, "batch_size": 256, "eval_every": 20, "eval_sample": 2000}


def batch_of(seed: int, rows: int) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    anchor = torch.randint(0, 40, (rows,), generator=generator)
    others = torch.randint(0, 40, (rows, 4), generator=generator)
    return Batch(anchor, others, torch.rand(rows, generator=generator) + 0.5)


def gradients(out: Path) -> None:
    model = build_model("mf_bias", 40, 8, 0.1, 0)
    step = FusedStep(model, LOSSES["continuous"], 0.01, 1.2)
    ranks, _ = distributed.start()
    mine = batch_of(ranks.rank, 30 + 20 * ranks.rank)  # batches of unequal size
    names = sorted(step.optimizer.params)
    widths = {name: step.optimizer.params[name].shape[1] for name in names}
    local = step.gradients(mine)
    headers = distributed.gather_headers(local, len(mine), names)
    summed, loss = distributed.combine(local, headers, names, widths, DistinctRows(40))
    samples = sum(int(header[0]) for header in headers)
    if ranks.lead:
        both = [batch_of(rank, 30 + 20 * rank) for rank in range(ranks.world)]
        union = Batch(
            torch.cat([b.anchor for b in both]),
            torch.cat([b.others for b in both]),
            torch.cat([b.weight for b in both]),
        )
        alone = step.gradients(union)
        torch.save(
            {
                "summed": summed,
                "loss": loss,
                "samples": samples,
                "union": alone.rows,
                "union_loss": alone.loss,
                "union_samples": len(union),
            },
            out / "gradients.pt",
        )
    distributed.stop()


def train(out: Path, data: Path) -> None:
    tasks = []
    opened = training.open_task
    training.open_task = lambda *args: tasks.append(opened(*args)) or tasks[-1]
    ranks, _ = distributed.start()  # kept open here: train() leaves it to its creator
    training.train(data, name="ranks", quiet=True, options={"model": "mf_bias", **TRAIN})
    model = tasks[0].model
    if ranks.lead:  # rank 0's finish() smoothed its vectors: its replica is the checkpoint
        model.load_state_dict(runs.load_torch(data / "runs" / "ranks" / runs.CHECKPOINT)["model"])
    torch.save(model.state_dict(), out / f"rank-{dist.get_rank()}.pt")
    distributed.stop()


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "gradients":
        gradients(out)
    else:
        train(out, Path(sys.argv[3]))

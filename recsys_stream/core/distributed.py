"""Data-parallel training with torch.distributed: what one rank of N does differently.

Every rank holds the whole model (replicated tables), makes the same batches
as the others and trains on its slice of each one's rows
(:meth:`RowGroupStream.shard`): the ranks together train on the batches one
process would. A step's gradients are the fused
step's: each table's distinct touched rows and their gradient rows. The
ranks gather them all (:func:`gather_headers`, :func:`combine`), and every
rank sums them in rank order into the gradient of the union of the N
batches, then applies the
same lazy Adam update: the replicas stay bit-identical without ever
sending a table. Rank 0 alone writes the run; every rank scores the same
curve points, so early stopping decides the same everywhere.

Launched by ``torchrun`` (``python -m recsys_stream train ... --nproc N``
does it), or on a Spark cluster by :mod:`recsys_stream.core.spark_launcher`.
Gloo runs the collectives on CPU; a step costs three all-gathers (a header
of counts, the rows, the gradients), whose volume is the touched rows,
never the tables.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline.contracts import ENTITIES_SCHEMA, ITEMS, USERS, VOCAB, VOCAB_SCHEMA, require
from pipeline.errors import PipelineError
from recsys_stream.core.optim import DistinctRows, Gradients, row_sums

TIMEOUT = datetime.timedelta(minutes=30)  # rank 0's final evaluation runs between collectives


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1

    @property
    def lead(self) -> bool:
        """Whether this process writes the run (rank 0)."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def total(self, value: float) -> float:
        """``value`` summed over the ranks (a collective: every rank must call it)."""
        if not self.parallel:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def any(self, flag: bool) -> bool:
        """Whether any rank's ``flag`` is set (a collective)."""
        return self.total(float(flag)) > 0


def launched() -> bool:
    """Whether this process is one of several a launcher (torchrun) started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def check_processes(data_dir, options: dict, processes: int) -> None:
    """Refuse, in one line and before any process starts, what N processes cannot train:
    a model without a fused step, a batch that does not divide, ranks that do not fit in
    the available memory; and warn, in one line, of more ranks than cores."""
    from recsys_stream.core.config import TrainConfig
    from recsys_stream.core.tasks import task_kind

    if processes < 1:
        raise PipelineError(f"--nproc must be 1 or more, got {processes}")
    TrainConfig(**options)
    kind = task_kind(data_dir, options.get("model"), options.get("task"))
    config = TrainConfig.defaults(kind, **options)
    if config.step == "autograd" or not _has_layout(kind, config):
        raise PipelineError(
            f"--nproc {processes}: only models with a fused step train on several processes; "
            f"--model {config.model} with --step {config.step} trains on one"
        )
    check_batch(config.batch_size, processes)
    _check_memory(data_dir, kind, config, processes)
    cores = _cores()
    if processes > cores:
        print(
            f"warning: --nproc {processes} is more than the {cores} cores this process may run "
            "on: the ranks take turns on them, and every step waits for the slowest",
            file=sys.stderr,
        )


# What a rank holds beside its tables: the interpreter with torch, pyarrow, polars
# and scikit-learn, the stream's buffers and the validation probe. Measured: a peak
# RSS of 500 to 600 MB per rank of `--nproc 2` on a 20,000-product catalog (tables
# of 8 MB), and 220 MB for torchrun's launcher.
RANK_RUNTIME_BYTES = 600 << 20
LAUNCHER_BYTES = 250 << 20


def _check_memory(data_dir, kind: str, config, processes: int) -> None:
    """Refuse ranks whose runtime and replicated tables (``tasks.training_bytes``, the
    estimate training refuses a dim by) do not fit in the available memory together."""
    from recsys_stream.core import tasks

    directory = Path(data_dir)
    if kind == "pairs":
        rows = require(directory / VOCAB, VOCAB_SCHEMA).metadata.num_rows
        what = f"{rows:,} products"
    else:
        users, items = (
            require(directory / name, ENTITIES_SCHEMA).metadata.num_rows for name in (USERS, ITEMS)
        )
        rows, what = users + items, f"{users:,} users and {items:,} items"
    each = RANK_RUNTIME_BYTES + tasks.training_bytes(rows, config)
    available = tasks.available_memory()
    if available and LAUNCHER_BYTES + processes * each > available:
        fit = max(0, (available - LAUNCHER_BYTES) // each)
        raise PipelineError(
            f"--nproc {processes}: {processes} processes of about {each / 2**30:.2f} GiB each "
            f"(the runtime and the tables of {what}) need {processes * each / 2**30:.1f} GiB; "
            f"{available / 2**30:.1f} GiB is available, enough for {fit}"
        )


def _cores() -> int:
    """The cores this process may run on (its affinity, where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _has_layout(kind: str, config) -> bool:
    """Whether the kind's model of that name has the fused step's layout (a model the
    task will refuse itself has none)."""
    from recsys_stream.core.tasks import task_class

    model = task_class(kind).models.get(config.model)
    return model is not None and model.has_layout()


def check_batch(batch_size: int, processes: int) -> None:
    if batch_size % processes:
        raise PipelineError(
            f"--batch-size {batch_size} is the step's rows over all {processes} processes; "
            f"make it a multiple of {processes}"
        )


def launch(argv: list[str], processes: int) -> int:
    """Run ``python -m recsys_stream ARGV`` as ``processes`` processes of this machine
    under torchrun (one thread each: the ranks share its cores); their exit code.

    ``--nproc`` is left out of ARGV: torchrun would take it for its own
    ``--nproc-per-node``.
    """
    kept = []
    for arg in argv:
        if kept[-1:] == ["--nproc"]:
            kept.pop()
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "recsys_stream",
        *kept,
    ]
    return subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode


def start() -> tuple[Ranks, bool]:
    """The ranks, joining the process group when a launcher (torchrun) started N > 1
    processes; and whether this call created the group (its caller then ends it)."""
    if not launched():
        return Ranks(), False
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    return Ranks(dist.get_rank(), dist.get_world_size()), created


def stop() -> None:
    """Leave the process group."""
    if dist.is_initialized():
        dist.destroy_process_group()


def lockstep(batches: Iterable, ranks: Ranks) -> Iterator:
    """Each rank's batches, then ``None`` until every rank has run out.

    Every step is a collective: a rank whose slice of the epoch's last batch
    is empty takes an empty step.
    """
    if not ranks.parallel:
        yield from batches
        return
    source = iter(batches)
    while True:
        batch = next(source, None)
        if not ranks.any(batch is not None):
            return
        yield batch


class DistributedStep:
    """A fused step whose gradients are summed over the ranks before its update.

    ``step`` has ``gradients(batch) -> Gradients``, ``optimizer`` and ``distinct``; a rank
    without a batch contributes nothing to the sum. Each rank's gradient is
    of its batch's mean, so it is weighed by its batch's share of the
    step's samples: the sum is the gradient of the union's mean.
    """

    def __init__(self, step, ranks: Ranks):
        if not hasattr(step, "gradients"):
            raise PipelineError(
                f"--nproc {ranks.world}: the {step.kind} step does not train on several "
                "processes; models with a fused step do (--step fused)"
            )
        self.step, self.ranks, self.kind = step, ranks, step.kind
        self.names = sorted(step.optimizer.params)
        self.widths = {name: step.optimizer.params[name].shape[1] for name in self.names}
        self.distinct = step.distinct  # its scratch array: free once the gradients are made
        # Seconds in the exchange: waiting for the header (the slowest rank's
        # batch, and the latency), then moving and summing the rows; and the
        # bytes of rows and gradient rows each process received.
        self.wait_seconds = self.transfer_seconds = 0.0
        self.received_bytes = 0

    def __call__(self, batch, lr: float) -> float:
        """Update from the ranks' batches at ``lr``; the union's mean loss."""
        local = self.step.gradients(batch) if batch is not None else None
        started = time.perf_counter()
        headers = gather_headers(local, len(batch) if batch is not None else 0, self.names)
        gathered = time.perf_counter()
        rows, loss = combine(local, headers, self.names, self.widths, self.distinct)
        self.wait_seconds += gathered - started
        self.received_bytes += sum(
            int(count) * (8 + 4 * self.widths[name])
            for header in headers
            for name, count in zip(self.names, header[2:].tolist())
        )
        self.transfer_seconds += time.perf_counter() - gathered
        self.step.optimizer.step(rows, lr)
        return loss

    def state_dict(self) -> dict:
        return self.step.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.step.load_state_dict(state)


def gather_headers(local: Gradients | None, samples: int, names: list[str]) -> list[torch.Tensor]:
    """Every rank's header: its samples, its mean loss, each parameter's row count."""
    found = local.rows if local is not None else {}
    counts = [len(found[name][0]) if name in found else 0 for name in names]
    return _gather(
        torch.tensor([samples, local.loss if local else 0.0, *counts], dtype=torch.float64)
    )


def combine(
    local: Gradients | None,
    headers: list[torch.Tensor],
    names: list[str],
    widths: dict[str, int],
    distinct: DistinctRows,
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """The gradients of all ranks' batches together (``headers``: every rank's, from
    :func:`gather_headers`): each parameter's distinct rows and their weighted sums, and
    the union's mean loss.

    Two all-gathers, of every rank's rows and of its gradient values, padded
    to the longest. Each rank then sums the same inputs in the same (rank)
    order, so all end with the same bits.
    """
    found = local.rows if local is not None else {}
    total = int(sum(h[0].item() for h in headers))
    loss = sum(h[0].item() * h[1].item() for h in headers) / max(total, 1)
    share = headers[dist.get_rank()][0].item() / max(total, 1)
    ids = [found[name][0] for name in names if name in found]
    values = [(found[name][1] * share).reshape(-1) for name in names if name in found]
    every_ids = _gather_varying(_joined(ids, torch.int64), [_rows(h) for h in headers])
    sizes = [int(sum(c * widths[n] for c, n in zip(h[2:].long().tolist(), names))) for h in headers]
    every_values = _gather_varying(_joined(values, torch.float32), sizes)
    pieces: dict[str, tuple[list, list]] = {name: ([], []) for name in names}
    for head, rank_ids, rank_values in zip(headers, every_ids, every_values):
        row_offset = value_offset = 0
        for name, count in zip(names, head[2:].long().tolist()):
            width = widths[name]
            pieces[name][0].append(rank_ids[row_offset : row_offset + count])
            chunk = rank_values[value_offset : value_offset + count * width]
            pieces[name][1].append(chunk.view(count, width))
            row_offset, value_offset = row_offset + count, value_offset + count * width
    summed = {}
    for name, (name_ids, name_values) in pieces.items():
        joined = torch.cat(name_ids)
        if len(joined):
            summed[name] = row_sums(distinct(joined), torch.cat(name_values))
    return summed, loss


def _rows(header: torch.Tensor) -> int:
    return int(header[2:].sum().item())


def _joined(tensors: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return torch.cat(tensors) if tensors else torch.zeros(0, dtype=dtype)


def _gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    found = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(found, tensor)
    return found


def _gather_varying(tensor: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Every rank's 1-d ``tensor``, whose lengths are ``sizes`` (known to all ranks)."""
    longest = max(sizes)
    padded = torch.zeros(longest, dtype=tensor.dtype)
    padded[: len(tensor)] = tensor
    return [found[:size] for found, size in zip(_gather(padded), sizes)]

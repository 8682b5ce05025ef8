"""Training any registered model from the stage files: one loop, with resume.

The loop streams a task's batches (:mod:`recsys_stream.core.tasks`: product
pairs, user-item ratings or each user's ratings in time order, chosen by
the dataset's files and the model), steps, records
learning-curve points, checkpoints every epoch, resumes, stops early when
``--patience`` says so, and tunes torch's threads; it knows neither the model
nor how its step computes gradients: ``step(batch, lr)``
(:mod:`recsys_stream.core.steps`). It writes ``runs/NAME/``
(:mod:`recsys_stream.core.runs`). Under a launcher of N processes (torchrun) it
trains data-parallel (:mod:`recsys_stream.core.distributed`): rank 0 writes the
run, and every rank steps and scores the same.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.errors import PipelineError
from pipeline.files import write_json
from pipeline.memory import peak_rss_mb
from pipeline.progress import progress
from recsys_stream.core import distributed, heap, prefetch, runs
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.distributed import DistributedStep, Ranks
from recsys_stream.core.divergence import Diverged, DivergenceWatch
from recsys_stream.core.runs import Run, TrainState
from recsys_stream.core.schedule import learning_rate
from recsys_stream.core.tasks import Task, check_model_options, open_task, task_kind
from recsys_stream.core.threads import ThreadTuner

RESUME = (False, True, "auto")


def train(
    data_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    name: str | None = None,
    resume: bool | str = False,
    quiet: bool = False,
    threads: int = 0,
    options: dict | None = None,
) -> dict:
    """Train ``config`` on ``data_dir``; return the run's summary.

    ``config``: default, the defaults of the task's kind and model with
    ``options`` over them (``TrainConfig.defaults``; the command line's way).
    ``resume``: False starts afresh; True continues from the run's checkpoint,
    refusing one made with other settings (only ``epochs`` may differ, as long as
    the checkpoint is the start of this run: ``Run.load_checkpoint``), and
    says so when there is none; ``"auto"`` continues when the checkpoint
    matches and starts afresh, saying why, when it does not.
    ``threads``: the step's threads (torch's intra-op threads, a kernel step's
    lanes: :mod:`recsys_stream.core.lanes`); 0 chooses between one
    and all by measured speed (see :mod:`recsys_stream.core.threads`), which
    changes the speed only, never the result; for a task whose step sums in
    an order that depends on the thread count (``Task.thread_invariant``:
    the sequence models' recurrent layers), 0 means one thread, so a run is
    reproducible; so it does on each of N data-parallel processes.

    Started by torchrun (``WORLD_SIZE`` > 1), each process trains its share
    of the data; rank 0 returns the summary, the others ``{"run", "rank"}``.
    """
    if resume not in RESUME:
        raise PipelineError(f"--resume must be yes or auto, got {resume!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise PipelineError(f"--threads must be 0 (choose) or more, got {threads!r}")
    if config is None:
        options = options or {}
        check_model_options(TrainConfig(**options))  # the options' checks, then the dataset's
        kind = task_kind(data_dir, options.get("model"), options.get("task"))
        config = TrainConfig.defaults(kind, **options)
    check_model_options(config)
    kind = task_kind(data_dir, config.model, config.task)
    started = time.perf_counter()
    heap.keep_freed_memory()
    before = torch.get_num_threads()
    ranks, created = distributed.start()
    try:
        with torch.random.fork_rng():  # dropout's draws, seeded, leave the caller's alone
            torch.manual_seed(config.seed)
            task = open_task(kind, data_dir, config)
            if ranks.parallel:
                _distribute(task, ranks)
            return _train(task, ranks, name, resume, quiet, threads, started)
    finally:
        torch.set_num_threads(before)
        if created:
            distributed.stop()


def _distribute(task: Task, ranks: Ranks) -> None:
    """Make ``task`` one rank's: its share of the stream, its step summed over the ranks."""
    distributed.check_batch(task.batch_size, ranks.world)
    task.step = DistributedStep(task.step, ranks)
    task.stream.shard(ranks.rank, ranks.world)


def _train(task: Task, ranks: Ranks, name, resume, quiet, threads, started) -> dict:
    config = task.config
    run = Run(
        runs.run_dir(task.directory, name or task.default_name), config, task.identity, task.kind
    )
    state = _starting_state(run, resume, task, ranks.lead)
    state.parts += 1
    first_step = state.step
    fixed = threads or (0 if task.thread_invariant and not ranks.parallel else 1)
    tuner = ThreadTuner(fixed, partial(_set_threads, task.step))
    quiet = quiet or not ranks.lead
    watch = DivergenceWatch(task.model, config)
    try:
        if not state.history:  # the curve starts at the untrained model
            _record(task, ranks, state, 0, config.lr, [], 0, time.perf_counter(), tuner)
        for epoch in range(state.epoch, config.epochs):
            if state.stopped_early:
                break
            _train_epoch(task, ranks, tuner, watch, epoch, state, quiet)
            state.epoch = epoch + 1
            with tuner.paused():
                watch.compare(state.step)  # before the checkpoint: no diverged model in it
                _watch(task, run, state, ranks.lead)
                if not ranks.lead:
                    continue
                part_seconds = time.perf_counter() - started
                run.save_checkpoint(
                    task.model,
                    task.step.state_dict(),
                    dataclasses.replace(state, wall_seconds=state.wall_seconds + part_seconds),
                )
                runs.write_metrics(run.path(runs.METRICS), state.history, task.metrics)
    except Diverged as exc:  # no summary.json: nothing that looks finished
        raise PipelineError(f"{exc}; {_last_good(run, state)}") from None
    steps = state.step - first_step
    exchange = _exchange_seconds(task.step, steps) if ranks.parallel else {}
    step_kind, batch_size = task.step.kind, task.batch_size
    task.step = None  # the optimizer's moments, two thirds of the training memory
    if not ranks.lead:
        return {"run": run.name, "rank": ranks.rank}
    if config.patience and state.best_epoch != state.epoch:
        run.load_best(task.model)
    summary = {"run": run.name, "kind": task.kind, **task.finish(run)}
    runs.write_metrics(run.path(runs.METRICS), state.history, task.metrics)
    summary.update(
        {
            "epochs": state.epoch,
            "best_epoch": state.best_epoch or state.epoch,
            "stopped_early": state.stopped_early,
            "step": step_kind,  # the step that trained: "kernel", "fused" or "autograd"
            "batch_size": batch_size,  # the rows a step took (--batch-size 0 chooses)
            "steps": state.step,
            "samples": state.samples,
            "train_seconds": round(state.train_seconds, 2),
            "samples_per_s": round(state.samples / max(state.train_seconds, 1e-9)),
            "epoch_start_lr": state.epoch_start_lr,
            "parts": state.parts,
            "processes": ranks.world,
            **exchange,
            "config": config.to_dict(),
            "steps_by_threads": {str(n): count for n, count in tuner.steps_at.items()},
        }
    )
    part_seconds = time.perf_counter() - started
    summary["seconds"] = round(state.wall_seconds + part_seconds, 2)
    summary["seconds_last_part"] = round(part_seconds, 2)
    summary["peak_rss_mb"] = peak_rss_mb()
    write_json(run.path(runs.SUMMARY), summary)
    return summary


def _exchange_seconds(step: DistributedStep, steps: int) -> dict[str, float]:
    """Rank 0's seconds waiting for the other ranks' headers and moving the gradients,
    and the megabytes of rows and gradient rows it received a step (this part's steps)."""
    return {
        "exchange_wait_seconds": round(step.wait_seconds, 2),
        "exchange_transfer_seconds": round(step.transfer_seconds, 2),
        "exchange_mb_per_step": round(step.received_bytes / max(steps, 1) / 1e6, 3),
    }


def _watch(task: Task, run: Run, state: TrainState, lead: bool) -> None:
    """Early stopping: keep the best epoch's weights (``lead``: the process that writes
    the run); stop after ``patience`` epochs without a better score (of the epoch's last
    curve point)."""
    patience = task.config.patience
    if not patience:
        return
    score, best = state.history[-1][task.monitor], state.best_score
    if best is None or (
        score is not None and (score > best if task.higher_is_better else score < best)
    ):
        state.best_score, state.best_epoch = score, state.epoch
        if lead:
            run.save_best(task.model)
    elif state.epoch - state.best_epoch >= patience:
        state.stopped_early = True


def _starting_state(run: Run, resume, task: Task, lead: bool) -> TrainState:
    """The state to start from: a fresh one, or the checkpoint's, loaded into model and step
    (``lead``: the process that writes the run, and so starts it)."""
    checkpoint = run.path(runs.CHECKPOINT)
    if not resume or not checkpoint.is_file():
        if resume is True and lead:
            _note(f"{checkpoint}: no checkpoint to resume from; starting at epoch 1")
        if lead:
            run.start(keep_checkpoint=False)
        return TrainState()
    saved, mismatch = run.load_checkpoint()
    if mismatch and resume is True:
        raise PipelineError(f"{checkpoint}: {mismatch}; rerun without --resume")
    if mismatch:
        if lead:
            _note(f"{checkpoint}: {mismatch}; starting afresh")
            run.start(keep_checkpoint=False)
        return TrainState()
    if lead:
        run.start(keep_checkpoint=True)
    task.model.load_state_dict(saved["model"])
    task.step.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    return TrainState(**saved["state"])


def _last_good(run: Run, state: TrainState) -> str:
    """Which checkpoint a diverged run leaves: the last epoch's, whose weights passed the
    checks at the epoch's last curve point."""
    checkpoint = run.path(runs.CHECKPOINT)
    if state.epoch and checkpoint.is_file():
        return f"the last good checkpoint is {checkpoint} (epoch {state.epoch})"
    return "there is no checkpoint: it diverged in epoch 1"


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def _set_threads(step, threads: int) -> None:
    """torch's intra-op threads, and the lanes of a kernel step (``core.lanes``)."""
    torch.set_num_threads(threads)
    if hasattr(step, "set_threads"):
        step.set_threads(threads)


def _train_epoch(
    task: Task,
    ranks: Ranks,
    tuner: ThreadTuner,
    watch: DivergenceWatch,
    epoch: int,
    state: TrainState,
    quiet: bool,
):
    """One pass over the stream (this rank's share); learning-curve points along the way,
    at each of which ``watch`` checks the window's loss and the weights."""
    config = task.config
    task.stream.set_epoch(epoch)
    # Without workers the stream's batches are made on a thread beside the step
    # (core.prefetch): a DataLoader would yield the same batches at a cost of
    # tens of microseconds each (its profiling hooks) and a copy between processes.
    loader = (
        DataLoader(task.stream, batch_size=None, num_workers=config.workers, prefetch_factor=4)
        if config.workers
        else prefetch.ahead(task.stream)
    )
    steps_per_epoch = math.ceil(task.rows / task.batch_size)
    points = curve_points(steps_per_epoch, config.eval_every)
    losses, samples, ticked = [], 0, time.perf_counter()
    with progress(task.samples, "samples", f"epoch {epoch + 1}/{config.epochs}", quiet) as bar:
        for step_in_epoch, batch in enumerate(distributed.lockstep(loader, ranks)):
            lr = learning_rate(
                config.schedule,
                config.lr,
                epoch,
                step_in_epoch,
                steps_per_epoch,
                config.epochs,
                config.cycle,
            )
            if step_in_epoch == 0:
                state.epoch_start_lr.append(lr)
            loss = task.step(batch, lr)
            state.step += 1
            watch.step(loss, state.step, batch)
            done = len(batch) if batch is not None else 0
            tuner.step_done(done)
            losses.append(loss)
            samples += done
            bar.update(done * ranks.world)  # about the step's samples over all ranks
            if step_in_epoch + 1 in points:
                ticked = _record(task, ranks, state, epoch + 1, lr, losses, samples, ticked, tuner)
                with tuner.paused():
                    watch.point(state.step)
                bar.set_postfix(loss=f"{state.history[-1]['loss']:.4f}")
                losses, samples = [], 0
        if losses:  # an epoch of more batches than planned: close its curve
            _record(task, ranks, state, epoch + 1, lr, losses, samples, ticked, tuner)
            watch.point(state.step)


def curve_points(steps_per_epoch: int, eval_every: int) -> set[int]:
    """The steps of an epoch (1-based) after which a learning-curve point is recorded.

    ``eval_every`` 0: ten points spread evenly, the last at the epoch's end;
    otherwise every ``eval_every`` steps and at the end, dropping a regular
    point that would fall within half an interval of the end.
    """
    if eval_every == 0:
        return {max(1, round(steps_per_epoch * i / 10)) for i in range(1, 11)}
    regular = range(eval_every, steps_per_epoch - eval_every // 2 + 1, eval_every)
    return {*regular, steps_per_epoch}


def _record(task: Task, ranks: Ranks, state, epoch, lr, losses, samples, ticked, tuner) -> float:
    """Append a learning-curve point (``samples``: this rank's since the last one); return
    the time its clock restarts from."""
    samples = int(ranks.total(samples))
    elapsed = time.perf_counter() - ticked
    state.samples += samples
    state.train_seconds += elapsed
    with tuner.paused():
        metrics = task.score(state.step)
    state.history.append(
        {
            "step": state.step,
            "epoch": epoch,
            "lr": lr,
            "loss": float(np.mean(losses)) if losses else None,
            **metrics,
            "samples_per_s": round(samples / max(elapsed, 1e-9)) if samples else None,
            "threads": tuner.threads,
        }
    )
    return time.perf_counter()

"""Training any registered model from the stage files: one loop, with resume.

Reads ``train.parquet`` as a stream, ``val.parquet`` (about 10 bytes a row)
and the vocabulary size, checked together (:mod:`recsys_stream.inputs`);
writes ``runs/NAME/`` (:mod:`recsys_stream.runs`). The loop knows neither the
model nor how its step computes gradients: ``step(batch, lr)``
(:mod:`recsys_stream.steps`). Peak memory is the embedding tables with their
Adam moments, about V x (dim + 1) x 12 bytes for MF with bias, plus the
validation arrays and bounded buffers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.contracts import WALKS, check_lineage
from pipeline.errors import PipelineError
from pipeline.files import write_json
from pipeline.memory import peak_rss_mb
from pipeline.progress import progress
from pipeline.side_info import parse_features, side_info
from recsys_stream import evaluate, heap, runs, smoothing
from recsys_stream.config import TrainConfig
from recsys_stream.inputs import TrainingData, open_training_data
from recsys_stream.models import PairModel, SideTables, build_model
from recsys_stream.runs import Run, TrainState
from recsys_stream.sampling import NegativeSampler
from recsys_stream.schedule import learning_rate
from recsys_stream.steps import Step, check_finite, make_step
from recsys_stream.stream import PairStream
from recsys_stream.threads import ThreadTuner
from recsys_stream.walk_stream import WalkStream, expected_pairs, walk_frequency, walks_of

RESUME = (False, True, "auto")


def train(
    data_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    name: str | None = None,
    resume: bool | str = False,
    quiet: bool = False,
    threads: int = 0,
) -> dict:
    """Train ``config`` (default: TrainConfig()) on ``data_dir``; return the run's summary.

    ``resume``: False starts afresh; True continues from the run's checkpoint,
    refusing one made with other settings (only ``epochs`` may differ), and
    says so when there is none; ``"auto"`` continues when the checkpoint
    matches and starts afresh, saying why, when it does not.
    ``threads``: torch's intra-op threads for the step; 0 chooses between one
    and all by measured speed (see :mod:`recsys_stream.threads`). It changes
    the speed only, never the result.
    """
    config = config or TrainConfig()
    if resume not in RESUME:
        raise PipelineError(f"--resume must be yes or auto, got {resume!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise PipelineError(f"--threads must be 0 (choose) or more, got {threads!r}")
    started = time.perf_counter()
    heap.keep_freed_memory()
    before = torch.get_num_threads()
    try:
        return _train(Path(data_dir), config, name, resume, quiet, threads, started)
    finally:
        torch.set_num_threads(before)


def _train(data_dir, config, name, resume, quiet, threads, started) -> dict:
    data = open_training_data(data_dir)
    check_memory(data.vocab_size, config)
    run = Run(
        runs.run_dir(data.directory, name or config.name),
        config,
        runs.file_sha256(data.vocab),
        data.pairs_id,
        data.split_id,
    )
    model = build_model(
        config.model, data.vocab_size, config.dim, config.init_std, config.seed, _side(data, config)
    )
    model.configure(config)
    stream, rows = _stream(model, config, data)
    step = make_step(model, config, data.max_weight)
    state = _starting_state(run, resume, model, step)
    state.parts += 1
    probe = data.val.sample(config.eval_sample, config.seed)
    tuner = ThreadTuner(threads)
    if not state.history:  # the curve starts at the untrained model
        _record(model, probe, state, config, 0, config.lr, [], 0, time.perf_counter(), tuner)
    for epoch in range(state.epoch, config.epochs):
        _train_epoch(model, step, tuner, stream, rows, probe, config, epoch, state, quiet)
        state.epoch = epoch + 1
        part_seconds = time.perf_counter() - started
        with tuner.paused():
            run.save_checkpoint(
                model,
                step.state_dict(),
                dataclasses.replace(state, wall_seconds=state.wall_seconds + part_seconds),
            )
            runs.write_metrics(run.path(runs.METRICS), state.history)
    del step  # the optimizer's moments, two thirds of the training memory
    summary = _finish(model, run, data, state)
    summary["steps_by_threads"] = {str(n): count for n, count in tuner.steps_at.items()}
    part_seconds = time.perf_counter() - started
    summary["seconds"] = round(state.wall_seconds + part_seconds, 2)
    summary["seconds_last_part"] = round(part_seconds, 2)
    summary["peak_rss_mb"] = peak_rss_mb()
    write_json(run.path(runs.SUMMARY), summary)
    return summary


def _side(data: TrainingData, config: TrainConfig) -> SideTables | None:
    """The side information ``--side-info`` names, coded from products.parquet; or None."""
    features = parse_features(config.side_info)
    if not features:
        return None
    side = side_info(data.directory, features)
    codes = {name: torch.from_numpy(values) for name, values in side.codes.items()}
    return SideTables(side.sizes, codes)


def _starting_state(run: Run, resume, model: PairModel, step: Step) -> TrainState:
    """The state to start from: a fresh one, or the checkpoint's, loaded into model and step."""
    checkpoint = run.path(runs.CHECKPOINT)
    if not resume or not checkpoint.is_file():
        if resume is True:
            _note(f"{checkpoint}: no checkpoint to resume from; starting at epoch 1")
        run.start(keep_checkpoint=False)
        return TrainState()
    saved, mismatch = run.load_checkpoint()
    if mismatch and resume is True:
        raise PipelineError(f"{checkpoint}: {mismatch}; rerun without --resume")
    if mismatch:
        _note(f"{checkpoint}: {mismatch}; starting afresh")
        run.start(keep_checkpoint=False)
        return TrainState()
    run.start(keep_checkpoint=True)
    model.load_state_dict(saved["model"])
    step.load_state_dict(saved["optimizer"])
    return TrainState(**saved["state"])


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def check_memory(vocab_size: int, config: TrainConfig) -> None:
    """Refuse, in one line, a dim or batch size whose tables cannot fit in memory."""
    tables = vocab_size * (config.dim + 1) * 4 * 3  # weights and two Adam moments
    batch = config.batch_size * (config.negatives + 2) * config.dim * 4 * 8  # temporaries
    needed = tables + batch + vocab_size * 16
    available = _available_memory()
    if available and needed > available:
        raise PipelineError(
            f"--dim {config.dim} and --batch-size {config.batch_size} need about "
            f"{needed / 2**30:.1f} GiB for {vocab_size:,} products; "
            f"{available / 2**30:.1f} GiB is available"
        )


def _available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _stream(model: PairModel, config: TrainConfig, data: TrainingData):
    """The batches the model learns from, and the positive pairs an epoch holds.

    Pair models read train.parquet; skip-gram reads walks.parquet (made from
    the same split), its negatives drawn by walk frequency.
    """
    if model.inputs == "walks":
        path = data.directory / WALKS
        count, length, _ = walks_of(path)  # refuses a missing or malformed file
        check_lineage("split_id", data.train, path)
        frequency = walk_frequency(path, data.vocab_size)
        stream = WalkStream(
            path,
            config.batch_size,
            NegativeSampler(frequency, config.negative_power),
            config.negatives,
            config.window,
            config.seed,
            config.shuffle_groups,
            config.shared_negatives,
        )
        return stream, expected_pairs(count, length, config.window)
    stream = PairStream(
        data.train,
        config.batch_size,
        NegativeSampler(data.degree, config.negative_power),
        config.negatives,
        config.seed,
        config.shuffle_groups,
        config.shared_negatives,
    )
    return stream, data.train_rows


def _train_epoch(model, step, tuner, stream, rows, probe, config, epoch, state, quiet):
    """One pass over the stream; learning-curve points along the way."""
    stream.set_epoch(epoch)
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=config.workers,
        prefetch_factor=4 if config.workers else None,
    )
    steps_per_epoch = math.ceil(rows / config.batch_size)
    points = curve_points(steps_per_epoch, config.eval_every)
    total = rows * (1 + config.negatives)
    losses, samples, ticked = [], 0, time.perf_counter()
    with progress(total, "samples", f"epoch {epoch + 1}/{config.epochs}", quiet) as bar:
        for step_in_epoch, batch in enumerate(loader):
            lr = learning_rate(
                config.schedule, config.lr, epoch, step_in_epoch, steps_per_epoch, config.epochs
            )
            if step_in_epoch == 0:
                state.epoch_start_lr.append(lr)
            loss = step(batch, lr)
            state.step += 1
            check_finite(loss, state.step, config)
            tuner.step_done(len(batch))
            losses.append(loss)
            samples += len(batch)
            bar.update(len(batch))
            if step_in_epoch + 1 in points:
                ticked = _record(
                    model, probe, state, config, epoch + 1, lr, losses, samples, ticked, tuner
                )
                bar.set_postfix(loss=f"{state.history[-1]['loss']:.4f}")
                losses, samples = [], 0
        if losses:  # an epoch of more batches than planned: close its curve
            _record(model, probe, state, config, epoch + 1, lr, losses, samples, ticked, tuner)


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


def _record(model, probe, state, config, epoch, lr, losses, samples, ticked, tuner) -> float:
    """Append a learning-curve point; return the time its clock restarts from."""
    elapsed = time.perf_counter() - ticked
    state.samples += samples
    state.train_seconds += elapsed
    with tuner.paused():
        score = evaluate.scores(model, probe.src, probe.dst)
        check_finite(float(score.sum()), state.step, config, "scores")
        auc_all, auc_seen = evaluate.auc_all_and_seen(probe, score)
    state.history.append(
        {
            "step": state.step,
            "epoch": epoch,
            "lr": lr,
            "loss": float(np.mean(losses)) if losses else None,
            "auc_all": None if auc_all is None else round(auc_all, 5),
            "auc_seen": None if auc_seen is None else round(auc_seen, 5),
            "samples_per_s": round(samples / max(elapsed, 1e-9)) if samples else None,
            "threads": tuner.threads,
        }
    )
    return time.perf_counter()


def _finish(model: PairModel, run: Run, data: TrainingData, state: TrainState) -> dict:
    """Smooth the vectors, score the whole validation set and write the run's final files.

    The AUC of the unsmoothed vectors goes to the summary too, to show what
    smoothing adds; everything else (scores, curves, model.pt, embeddings)
    is of the smoothed model, the one ``similar`` loads.
    """
    config, val = run.config, data.val
    unsmoothed_auc = evaluate.auc(val.label, evaluate.scores(model, val.src, val.dst))
    with torch.no_grad():
        for weight in model.own_vectors().values():
            weight.copy_(smoothing.smooth(weight, data.train, data.degree, config.smoothing))
    score = evaluate.scores(model, val.src, val.dst)
    popular = evaluate.popularity_scores(data.degree, val)
    seen = val.seen
    runs.write_columns(run.path(runs.PR), evaluate.precision_recall_table(val.label, score))
    runs.write_columns(run.path(runs.ROC), evaluate.roc_points(val.label, score))
    runs.write_columns(run.path(runs.POPULARITY_ROC), evaluate.roc_points(val.label, popular))
    runs.write_metrics(run.path(runs.METRICS), state.history)
    run.save_model(model, data.vocab_size)
    lineage = {"pairs_id": data.pairs_id, "split_id": data.split_id}
    runs.write_embeddings(model, data.vocab, run.path(runs.EMBEDDINGS), lineage)
    return {
        "run": run.name,
        "auc_all": evaluate.auc(val.label, score),
        "auc_seen": evaluate.auc(val.label[seen], score[seen]),
        "auc_cold": evaluate.auc(val.label[~seen], score[~seen]),
        "auc_all_unsmoothed": unsmoothed_auc,
        "pr_auc": evaluate.pr_auc(val.label, score),
        "pr_auc_seen": evaluate.pr_auc(val.label[seen], score[seen]),
        "popularity_auc": evaluate.auc(val.label, popular),
        "popularity_auc_seen": evaluate.auc(val.label[seen], popular[seen]),
        "popularity_auc_cold": evaluate.auc(val.label[~seen], popular[~seen]),
        "negative_protocol": data.negative_protocol,
        "epochs": state.epoch,
        "steps": state.step,
        "samples": state.samples,
        "train_seconds": round(state.train_seconds, 2),
        "samples_per_s": round(state.samples / max(state.train_seconds, 1e-9)),
        "epoch_start_lr": state.epoch_start_lr,
        "parts": state.parts,
        "val_rows": len(val.label),
        "val_seen_rows": int(seen.sum()),
        "val_cold_rows": int((~seen).sum()),
        "vocab_size": data.vocab_size,
        "split_id": data.split_id,
        "config": config.to_dict(),
    }

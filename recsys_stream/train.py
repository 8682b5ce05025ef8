"""Training a matrix-factorization variant from the stage files, with resume.

Reads ``train.parquet`` as a stream, ``val.parquet`` (about 10 bytes a row)
and the vocabulary size; writes ``runs/NAME/``: model.pt, checkpoint.pt,
metrics.csv, pr.csv, roc.csv, summary.json and embeddings.parquet.
Peak memory is the embedding tables with their Adam moments, about
V x (dim + 1) x 12 bytes, plus the validation arrays and bounded buffers.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

from pipeline.contracts import stamped
from pipeline.errors import PipelineError
from pipeline.files import atomic_output, write_json
from pipeline.memory import peak_rss_mb
from pipeline.progress import progress
from recsys_stream import evaluate, heap, runs, smoothing
from recsys_stream.config import TrainConfig
from recsys_stream.fused import DistinctRows, LazyAdam, gradients
from recsys_stream.inputs import TrainingData, open_training_data
from recsys_stream.models import MF, MFBias, build_model
from recsys_stream.sampling import NegativeSampler
from recsys_stream.schedule import learning_rate
from recsys_stream.stream import PairStream
from recsys_stream.threads import ThreadTuner

METRIC_COLUMNS = ["step", "epoch", "lr", "loss", "auc_all", "auc_seen", "samples_per_s"]


def train(
    data_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    name: str | None = None,
    resume: bool = False,
    quiet: bool = False,
    threads: int = 0,
) -> dict:
    """Train ``config`` (default: TrainConfig()) on ``data_dir``; return the run's summary.

    ``threads``: torch's intra-op threads for the step; 0 chooses between one
    and all by measured speed (see :mod:`recsys_stream.threads`). It changes
    the speed only, never the result.
    """
    config = config or TrainConfig()
    if threads < 0:
        raise PipelineError(f"--threads must be 0 (choose) or more, got {threads}")
    started = time.perf_counter()
    heap.keep_freed_memory()
    before = torch.get_num_threads()
    try:
        return _train(data_dir, config, name, resume, quiet, threads, started)
    finally:
        torch.set_num_threads(before)


def _train(data_dir, config, name, resume, quiet, threads, started) -> dict:
    data = open_training_data(data_dir)
    check_memory(data.vocab_size, config)
    out = runs.run_dir(data.directory, name or config.name)
    out.mkdir(parents=True, exist_ok=True)
    vocab_hash = runs.file_sha256(data.vocab)
    stream = PairStream(
        data.train,
        config.batch_size,
        NegativeSampler(data.degree, config.negative_power),
        config.negatives,
        config.seed,
        config.shuffle_groups,
        max_weight=data.max_weight if config.labels == "continuous" else None,
    )
    probe = data.val.sample(config.eval_sample, config.seed)
    model = build_model(config.model, data.vocab_size, config.dim, config.init_std, config.seed)
    steps_per_epoch = math.ceil(data.train_rows / config.batch_size)
    tuner = ThreadTuner(threads)
    state = _fit(
        model, stream, probe, config, steps_per_epoch, out, vocab_hash, resume, quiet, tuner
    )
    summary = _finish(model, config, data, vocab_hash, state, out)
    summary["negative_protocol"] = data.negative_protocol
    summary["steps_by_threads"] = {str(n): steps for n, steps in tuner.steps_at.items()}
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["peak_rss_mb"] = peak_rss_mb()
    write_json(out / runs.SUMMARY, summary)
    return summary


def _fit(
    model, stream, probe, config, steps_per_epoch, out, vocab_hash, resume, quiet, tuner
) -> dict:
    """Train the remaining epochs, checkpointing each; return the training state.

    The optimizer's moments, two thirds of the training memory, are freed on
    return, before the final evaluation needs its own memory.
    """
    optimizer = LazyAdam(model)
    state = {
        "epoch": 0,
        "step": 0,
        "samples": 0,
        "train_seconds": 0.0,
        "history": [],
        "epoch_start_lr": [],
    }
    if resume and (out / runs.CHECKPOINT).is_file():
        state = _restore(out / runs.CHECKPOINT, config, vocab_hash, model, optimizer)
    for epoch in range(state["epoch"], config.epochs):
        _train_epoch(
            model, optimizer, tuner, stream, probe, config, epoch, steps_per_epoch, state, quiet
        )
        state["epoch"] = epoch + 1
        runs.save_torch(
            {
                "config": config.to_dict(),
                "vocab_sha256": vocab_hash,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                **state,
            },
            out / runs.CHECKPOINT,
        )
        _write_metrics(out / runs.METRICS, state["history"])
    return state


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


def _train_epoch(
    model, optimizer, tuner, stream, probe, config, epoch, steps_per_epoch, state, quiet
):
    """One pass over train.parquet; learning-curve points every eval_every steps."""
    stream.set_epoch(epoch)
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=config.workers,
        prefetch_factor=4 if config.workers else None,
    )
    total = stream_rows(stream) * (1 + config.negatives)
    binary = config.labels == "binary"
    distinct = DistinctRows(len(model.embedding.weight))
    losses, samples, ticked = [], 0, time.perf_counter()
    with progress(total, "samples", f"epoch {epoch + 1}/{config.epochs}", quiet) as bar:
        for step_in_epoch, batch in enumerate(loader):
            lr = learning_rate(
                config.schedule, config.lr, epoch, step_in_epoch, steps_per_epoch, config.epochs
            )
            if step_in_epoch == 0:
                state["epoch_start_lr"].append(lr)
            grads = gradients(
                model, batch.anchor, batch.others, batch.target, binary, config.l2, distinct
            )
            optimizer.step(grads, lr)
            tuner.step_done(len(batch))
            state["step"] += 1
            losses.append(grads.loss)
            samples += len(batch)
            bar.update(len(batch))
            if state["step"] % config.eval_every == 0:
                ticked = _record(model, probe, state, epoch, lr, losses, samples, ticked)
                bar.set_postfix(
                    loss=f"{state['history'][-1]['loss']:.4f}", auc=state["history"][-1]["auc_all"]
                )
                losses, samples = [], 0
        if losses:
            _record(model, probe, state, epoch, lr, losses, samples, ticked)


def stream_rows(stream: PairStream) -> int:
    return pq.ParquetFile(stream.path).metadata.num_rows


def _record(model, probe, state, epoch, lr, losses, samples, ticked) -> float:
    """Append a learning-curve point; return the time its clock restarts from."""
    elapsed = time.perf_counter() - ticked
    state["samples"] += samples
    state["train_seconds"] += elapsed
    auc_all, auc_seen = evaluate.auc_all_and_seen(
        probe, evaluate.scores(model, probe.src, probe.dst)
    )
    state["history"].append(
        {
            "step": state["step"],
            "epoch": epoch + 1,
            "lr": lr,
            "loss": float(np.mean(losses)),
            "auc_all": None if auc_all is None else round(auc_all, 5),
            "auc_seen": None if auc_seen is None else round(auc_seen, 5),
            "samples_per_s": round(samples / max(elapsed, 1e-9)),
        }
    )
    return time.perf_counter()


def _restore(
    path: Path, config: TrainConfig, vocab_hash: str, model: MF, optimizer: LazyAdam
) -> dict:
    """Load a checkpoint into model and optimizer; return the training state it holds."""
    saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # no second copy
    if saved["vocab_sha256"] != vocab_hash:
        raise PipelineError(f"{path}: made on another vocabulary; rerun without --resume")
    previous = TrainConfig.from_dict(saved["config"])
    if {**previous.to_dict(), "epochs": 0} != {**config.to_dict(), "epochs": 0}:
        raise PipelineError(f"{path}: made with other settings; rerun without --resume")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    keys = ["epoch", "step", "samples", "train_seconds", "history", "epoch_start_lr"]
    return {key: saved[key] for key in keys}


def _finish(model, config, data, vocab_hash, state, out) -> dict:
    """Smooth the embeddings, score the whole validation set and write the run's final files.

    The AUC of the unsmoothed embeddings goes to the summary too, to show what
    smoothing adds; everything else (scores, curves, model.pt, embeddings)
    is of the smoothed model, the one ``similar`` loads.
    """
    val = data.val
    unsmoothed_auc = evaluate.auc(val.label, evaluate.scores(model, val.src, val.dst))
    weight = model.embedding.weight
    with torch.no_grad():
        weight.copy_(smoothing.smooth(weight, data.train, data.degree, config.smoothing))
    score = evaluate.scores(model, val.src, val.dst)
    popular = evaluate.popularity_scores(data.degree, val)
    seen = val.seen
    table = evaluate.precision_recall_table(val.label, score)
    _write_columns(out / runs.PR, table)
    _write_columns(out / runs.ROC, evaluate.roc_points(val.label, score))
    _write_metrics(out / runs.METRICS, state["history"])
    runs.save_torch(
        {
            "model": config.model,
            "state_dict": model.state_dict(),
            "config": config.to_dict(),
            "vocab_size": data.vocab_size,
            "vocab_sha256": vocab_hash,
            "pairs_id": data.pairs_id,
            "split_id": data.split_id,
        },
        out / runs.MODEL,
    )
    write_embeddings(model, data, out / runs.EMBEDDINGS)
    return {
        "run": out.name,
        "auc_all": evaluate.auc(val.label, score),
        "auc_seen": evaluate.auc(val.label[seen], score[seen]),
        "auc_all_unsmoothed": unsmoothed_auc,
        "pr_auc": evaluate.pr_auc(val.label, score),
        "pr_auc_seen": evaluate.pr_auc(val.label[seen], score[seen]),
        "popularity_auc": evaluate.auc(val.label, popular),
        "popularity_auc_seen": evaluate.auc(val.label[seen], popular[seen]),
        "epochs": state["epoch"],
        "steps": state["step"],
        "samples": state["samples"],
        "train_seconds": round(state["train_seconds"], 2),
        "samples_per_s": round(state["samples"] / max(state["train_seconds"], 1e-9)),
        "epoch_start_lr": state["epoch_start_lr"],
        "val_rows": len(val.label),
        "val_seen_rows": int(seen.sum()),
        "vocab_size": data.vocab_size,
        "split_id": data.split_id,
        "config": config.to_dict(),
    }


def _write_columns(path: Path, columns: dict[str, np.ndarray]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows(zip(*(np.round(c, 6).tolist() for c in columns.values())))


def _write_metrics(path: Path, history: list[dict]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as file:
        writer = csv.DictWriter(file, METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(history)


def write_embeddings(
    model: MF, data: TrainingData, path: Path, rows_per_group: int = 65_536
) -> None:
    """embeddings.parquet: id, asin, vector (and bias for MFBias), a row group at a time."""
    weight = model.embedding.weight.detach().numpy()
    bias = model.bias.weight.detach().numpy()[:, 0] if isinstance(model, MFBias) else None
    vocab = pq.ParquetFile(data.vocab)
    fields = [
        ("id", pa.int32()),
        ("asin", pa.string()),
        ("vector", pa.list_(pa.float32(), weight.shape[1])),
    ]
    schema = stamped(
        pa.schema(fields + ([("bias", pa.float32())] if bias is not None else [])),
        "train",
        pairs_id=data.pairs_id,
        split_id=data.split_id,
    )
    with atomic_output(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for batch in vocab.iter_batches(rows_per_group, columns=["id", "asin"]):
            ids = batch.column(0).to_numpy()
            columns = [
                batch.column(0),
                batch.column(1),
                pa.FixedSizeListArray.from_arrays(weight[ids].reshape(-1), weight.shape[1]),
            ]
            if bias is not None:
                columns.append(pa.array(bias[ids]))
            writer.write_batch(pa.record_batch(columns, schema=schema))

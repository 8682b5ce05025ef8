"""A run directory's files, and loading a trained model back from one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from pipeline.contracts import VOCAB
from pipeline.errors import PipelineError
from pipeline.files import atomic_output
from recsys_stream.config import TrainConfig
from recsys_stream.models import MF, build_model

MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
PR = "pr.csv"
ROC = "roc.csv"
SUMMARY = "summary.json"
EMBEDDINGS = "embeddings.parquet"


def run_dir(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / "runs" / name


def dataset_of(run: Path) -> Path:
    """The dataset directory a run belongs to (``DATA/runs/NAME``)."""
    return Path(run).resolve().parents[1]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_torch(obj: dict, path: Path) -> None:
    """torch.save, atomically, streamed to the file (no in-memory copy of the state)."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def load_model(run: str | os.PathLike) -> tuple[MF, TrainConfig, dict]:
    """The trained model of a run, its config and the saved metadata.

    Refuses a model whose vocabulary hash differs from the dataset's
    vocab.parquet: ids would point at the wrong products.
    """
    run = Path(run)
    path = run / MODEL
    if not path.is_file():
        raise PipelineError(f"{path}: not found (it is made by `python -m recsys_stream train`)")
    saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    vocab = dataset_of(run) / VOCAB
    if not vocab.is_file() or file_sha256(vocab) != saved["vocab_sha256"]:
        raise PipelineError(f"{path}: trained on another vocabulary than {vocab}; retrain")
    config = TrainConfig.from_dict(saved["config"])
    model = build_model(config.model, saved["vocab_size"], config.dim, None, config.seed)
    model.load_state_dict(saved["state_dict"], assign=True)  # the saved tensors, not copies
    model.eval()
    return model, config, saved

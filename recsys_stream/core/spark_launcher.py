"""Data-parallel training on a Spark cluster, started by Spark's TorchDistributor.

    from pyspark.sql import SparkSession
    from recsys_stream.core.spark_launcher import train_on_spark

    SparkSession.builder.master("spark://host:7077").getOrCreate()
    summary = train_on_spark("/shared/books", processes=8, options={"model": "mf_bias"})

Each of ``processes`` Spark tasks (a barrier stage) runs one process of
:func:`recsys_stream.core.train.train` under torchrun, and the processes train
as :mod:`recsys_stream.core.distributed` describes; the call returns rank 0's
summary. Every executor must see the dataset directory at the same path (a
shared or network file system), and rank 0 writes the run there. Needs the
``spark`` extra (``pip install -e '.[spark]'``) and Java 17.
"""

from __future__ import annotations

import os


def train_on_spark(
    data_dir: str | os.PathLike,
    processes: int = 2,
    options: dict | None = None,
    name: str | None = None,
    resume: bool | str = False,
    local_mode: bool = False,
) -> dict:
    """Train ``data_dir`` on ``processes`` Spark tasks of the active session; rank 0's summary.

    ``options``: the training options, as ``train``'s. ``local_mode``: run
    the processes on the driver instead of the executors (TorchDistributor's
    own switch).
    """
    from pyspark.ml.torch.distributor import TorchDistributor

    from recsys_stream.core.distributed import check_processes

    options = options or {}
    check_processes(data_dir, options, processes)
    distributor = TorchDistributor(num_processes=processes, local_mode=local_mode, use_gpu=False)
    return distributor.run(_train_rank, os.fspath(data_dir), options, name, resume)


def _train_rank(data_dir: str, options: dict, name: str | None, resume: bool | str) -> dict:
    """One Spark task's process: the trainer, under the torchrun TorchDistributor started."""
    from recsys_stream.core.train import train

    return train(data_dir, name=name, resume=resume, quiet=True, options=options)

"""Shared fixtures: the real format samples in ../shared/data, small file writers, and
one local Spark session."""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DIGITAL_MUSIC_2014 = SHARED_DATA / "amazon-2014-meta" / "meta_Digital_Music.first7419.json.gz"
MAGAZINES_2018 = SHARED_DATA / "amazon-2018-meta" / "meta_Magazine_Subscriptions.json.gz"


def write_lines(path: Path, lines: list[str | bytes], final_newline: bool = True) -> Path:
    """Write ``lines`` to ``path`` (gzipped when it ends in .gz) and return it."""
    data = b"\n".join(line.encode() if isinstance(line, str) else line for line in lines)
    if final_newline:
        data += b"\n"
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


@pytest.fixture
def shared_sample():
    """Skip when the shared samples are not beside the repository."""

    def need(path: Path) -> Path:
        if not path.exists():
            pytest.skip(f"{path} not present")
        return path

    return need


@pytest.fixture(scope="session")
def spark():
    """A local[2] Spark session, started once: the tests that use it are marked
    ``xdist_group("spark")``, so under ``--dist loadgroup`` one worker runs them all."""
    os.environ["PYSPARK_PYTHON"] = sys.executable  # its workers' Python, with our packages
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def pytest_generate_tests(metafunc):
    """Run a model contract's tests (tests/model_contract.py) for every model of its kind."""
    variants = getattr(metafunc.cls, "variants", None)
    if variants is not None and "model" in metafunc.fixturenames:
        metafunc.parametrize("model", variants())


SLOW_FIXTURES = {"spark"}  # a test that takes one starts Spark


def pytest_collection_modifyitems(items):
    """Mark the tests that start Spark slow, beside the modules marked so."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

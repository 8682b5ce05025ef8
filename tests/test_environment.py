"""The set-up commands on a stock Debian/Ubuntu interpreter (PEP 668): a project .venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from repo import fresh_copy

pytestmark = pytest.mark.slow  # runs make and pip

SYSTEM_PYTHON = Path("/usr/bin/python3")


def _externally_managed() -> bool:
    if not SYSTEM_PYTHON.is_file():
        return False
    found = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True,
        text=True,
    )
    return (Path(found.stdout.strip()) / "EXTERNALLY-MANAGED").is_file()


def _site_packages(python: Path) -> dict[str, list[str]]:
    """What each of an interpreter's site-packages folders holds."""
    code = "import json, site; print(json.dumps(site.getsitepackages()))"
    folders = json.loads(subprocess.run([str(python), "-c", code], capture_output=True).stdout)
    return {f: sorted(os.listdir(f)) if os.path.isdir(f) else [] for f in folders}


def _bare_env() -> dict[str, str]:
    """This environment without an active virtual or conda environment."""
    drop = {"VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _make(copy: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=copy,
        env=_bare_env(),
        capture_output=True,
        text=True,
    )


needs_debian_python = pytest.mark.skipif(
    shutil.which("make") is None or not _externally_managed(),
    reason="needs make and a system /usr/bin/python3 that refuses installs (PEP 668)",
)


@needs_debian_python
def test_make_demo_with_the_system_python_builds_and_reuses_a_project_venv(tmp_path):
    copy = fresh_copy(tmp_path)
    (copy / ".venv" / "bin").mkdir(parents=True)  # an interrupted creation: no .made
    (copy / ".venv" / "bin" / "python").write_text("not an interpreter")
    before = _site_packages(SYSTEM_PYTHON)
    settings = ["DEMO_PRODUCTS=2000", "EPOCHS=1", "QUIET=1", f"PY={SYSTEM_PYTHON}"]

    first = _make(copy, "demo", *settings)

    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    venv = copy / ".venv"
    assert (venv / ".made").is_file() and (venv / ".recsys-stream-installed").is_file()
    assert f"home = {SYSTEM_PYTHON.parent}" in (venv / "pyvenv.cfg").read_text()
    assert ".venv/bin/python -m pipeline parse" in first.stdout
    assert ".venv/bin/python -m recsys_stream report" in first.stdout
    assert (copy / "data" / "demo" / "report.md").is_file()
    assert _site_packages(SYSTEM_PYTHON) == before  # nothing installed system-wide

    outputs = sorted((copy / "data" / "demo").rglob("*.*"))
    stamps = {path: path.stat().st_mtime_ns for path in outputs}
    again = _make(copy, "demo", *settings)
    assert again.returncode == 0
    assert "pip install" not in again.stdout and "making the project" not in again.stdout
    assert "-m pipeline" not in again.stdout and "-m recsys_stream" not in again.stdout
    assert {path: path.stat().st_mtime_ns for path in outputs} == stamps  # nothing rewritten

    lint = _make(copy, "lint")  # the dev tools came with the environment
    assert lint.returncode == 0, lint.stdout[-2000:] + lint.stderr[-2000:]
    assert ".venv/bin/python -m ruff check" in lint.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_a_python_without_venv_support_gets_one_line_and_no_half_made_venv(tmp_path):
    copy = fresh_copy(tmp_path)
    fake_stdlib = tmp_path / "no-ensurepip"
    (fake_stdlib / "ensurepip").mkdir(parents=True)
    (fake_stdlib / "ensurepip" / "__init__.py").write_text(
        "raise ImportError('No module named ensurepip')\n"
    )
    python = tmp_path / "python3"  # as Debian's interpreter without python3-venv
    python.write_text(f'#!/bin/sh\nPYTHONPATH={fake_stdlib} exec {sys.executable} "$@"\n')
    python.chmod(0o755)

    result = _make(copy, "install", f"PY={python}")

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "install python3-venv" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (copy / ".venv").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize("variable", ["VIRTUAL_ENV", "CONDA_PREFIX"])
def test_an_active_environment_is_used_instead_of_dot_venv(tmp_path, variable):
    copy = fresh_copy(tmp_path)
    env = {**_bare_env(), variable: str(tmp_path / "theirs")}
    (tmp_path / "theirs" / "bin").mkdir(parents=True)
    (tmp_path / "theirs" / "bin" / "python").symlink_to(sys.executable)
    shown = subprocess.run(
        ["make", "-n", "test"], cwd=copy, env=env, capture_output=True, text=True
    ).stdout
    assert f"using the environment {tmp_path / 'theirs'}" in shown
    assert f"{tmp_path / 'theirs'}/bin/python -m pytest" in shown
    assert ".venv" not in shown


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_clean_keeps_the_environment_and_distclean_removes_it(tmp_path):
    copy = fresh_copy(tmp_path)
    (copy / ".venv").mkdir()
    (copy / ".venv" / ".made").touch()
    (copy / "data" / "demo").mkdir(parents=True)
    (copy / "data" / "demo" / "pairs.json").write_text("{}")
    assert _make(copy, "clean").returncode == 0
    assert (copy / ".venv" / ".made").is_file()
    assert not (copy / "data" / "demo" / "pairs.json").exists()
    assert _make(copy, "distclean").returncode == 0
    assert not (copy / ".venv").exists()


def test_constraints_pin_every_dependency_exactly():
    lines = [
        line
        for line in (Path(__file__).resolve().parents[1] / ".ci" / "constraints.txt")
        .read_text()
        .splitlines()
        if line and not line.startswith("#")
    ]
    names = {line.split("==")[0].lower() for line in lines}
    assert all("==" in line for line in lines)
    for name in ["torch", "pyarrow", "polars", "ijson", "numpy", "scikit-learn", "ruff"]:
        assert name in names, name
    assert any(line.startswith("torch==2.13.0") for line in lines)

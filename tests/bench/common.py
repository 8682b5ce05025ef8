"""What the benchmark scripts share: the repository root and running a stage apart."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_stage(module: str, function: str, data_dir: Path, **options) -> dict:
    """``module.function(data_dir, quiet=True, **options)`` in a fresh interpreter, so its
    peak RSS is the stage's own; the stats it returns, plus the wall seconds around it."""
    code = (
        f"import json, sys; from {module} import {function}; "
        f"print(json.dumps({function}(sys.argv[1], quiet=True, **json.loads(sys.argv[2]))))"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(data_dir), json.dumps(options)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        sys.exit(f"{module}.{function} failed:\n{done.stderr}")
    stats = json.loads(done.stdout.splitlines()[-1])
    stats["wall_seconds"] = round(time.perf_counter() - started, 2)
    return stats

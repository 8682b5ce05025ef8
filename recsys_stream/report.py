"""DIR/report.md with its figures, for a dataset of any kind, from its stage stats and runs.

The report is built from whatever finished runs the directory holds that were
trained on its current stage files: a run whose stages were rerun since
(:mod:`recsys_stream.core.lineage`) is left out of the tables and figures, with
a note naming it and what changed. What the report holds is its kind's:
:mod:`recsys_stream.pairs.report` for product pairs,
:mod:`recsys_stream.ratings.report` for ratings (and sequences).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from pipeline.errors import PipelineError
from pipeline.files import atomic_output, clear_stale_temporaries
from recsys_stream.core import lineage, runs
from recsys_stream.core.tasks import dataset_kind

FIGURES = "figures"


def report(
    data_dir: str | os.PathLike,
    quiet: bool = False,
    note: Callable[[str], object] | None = None,
) -> Path:
    """Write ``data_dir/report.md`` and ``data_dir/figures/*.png``; return the report's path.

    ``note`` is called with each note of a run left out (for the command line
    to print); the report holds them too.
    """
    data_dir = Path(data_dir)
    variants, left_out = current_runs(data_dir, finished_runs(data_dir))
    figures = data_dir / FIGURES
    figures.mkdir(exist_ok=True)
    for folder in (data_dir, figures):
        clear_stale_temporaries(folder)
    if dataset_kind(data_dir) == "ratings":
        from recsys_stream.ratings.report import rating_report

        lines = rating_report(data_dir, variants, figures, left_out)
    else:
        from recsys_stream.pairs.report import pair_report

        lines = pair_report(data_dir, variants, figures, left_out)
    out = data_dir / "report.md"
    with atomic_output(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    if note:
        for line in left_out:
            note(line)
    return out


def finished_runs(data_dir: Path) -> dict[str, dict]:
    """Finished runs by name, each with its summary and its curves' rows."""
    found = {}
    for summary in sorted((data_dir / "runs").glob(f"*/{runs.SUMMARY}")):
        run = summary.parent
        found[run.name] = {
            "summary": json.loads(summary.read_text()),
            "metrics": csv_rows(run / runs.METRICS),
            "pr": csv_rows(run / runs.PR),
            "roc": csv_rows(run / runs.ROC),
            "popularity_roc": csv_rows(run / runs.POPULARITY_ROC),
            "predictions": csv_rows(run / runs.PREDICTIONS),
        }
    return found


def current_runs(data_dir: Path, found: dict[str, dict]) -> tuple[dict[str, dict], list[str]]:
    """The runs of ``found`` trained on the current stage files, and a note for each other.

    Refuses, in one line, a directory without a finished run or whose every
    run was trained on stage files rerun since.
    """
    folder = data_dir / "runs"
    if not found:
        raise PipelineError(f"{folder}: no finished run (train one first)")
    stale = {name: lineage.change(folder / name) for name in found}
    stale = {name: change for name, change in stale.items() if change}
    if len(stale) == len(found):
        every = "; ".join(
            f"{name} {change} ({change.steps('its training')})" for name, change in stale.items()
        )
        raise PipelineError(f"{folder}: every run was trained on stage files rerun since: {every}")
    notes = [
        f"run {name} left out: {change} ({change.steps('its training')})"
        for name, change in stale.items()
    ]
    return {name: run for name, run in found.items() if name not in stale}, notes


def left_out_lines(notes: list[str]) -> list[str]:
    """The report's notes of the runs left out, a list item each."""
    return ["", *(f"- {note}" for note in notes)] if notes else []


def stage_table(rows: list[tuple[str, str, dict]]) -> list[str]:
    """A markdown table of (stage, what it made, its stats), with seconds and peak RSS."""
    table = ["| stage | result | seconds | peak RSS (MiB) |", "|---|---|---:|---:|"]
    for stage, text, values in rows:
        table.append(
            f"| {stage} | {text} | {fmt(values.get('seconds'), 1)} | "
            f"{fmt(values.get('peak_rss_mb'), 0)} |"
        )
    return table


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG, atomically, and close it."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def csv_rows(path: Path) -> list[dict[str, float | None]]:
    """A CSV file's rows, numbers as floats ("", nan and None as None); none if missing."""
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        return [
            {k: float(v) if v not in ("", "nan", "None") else None for k, v in row.items()}
            for row in csv.DictReader(file)
        ]


def fmt(value, digits: int = 4) -> str:
    """A table cell: "–" for None, a float to ``digits`` places, ints with commas."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def stats_of(path: Path) -> dict:
    """A stats JSON file, or {} when the stage has not run."""
    return json.loads(path.read_text()) if path.is_file() else {}

"""The stages' options dataclasses: the command line built from them, their defaults
shared with the stage functions, their ranges and the one seed check."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from pipeline import cli
from pipeline.__main__ import STAGES, build_parser
from pipeline.errors import PipelineError
from pipeline.options import default, flag

# The least each subcommand needs to parse: its positional and required arguments.
REQUIRED = {
    "synth": {"out": "o.json", "products": "10"},
    "synth-ratings": {"out": "o.csv", "users": "2", "items": "2", "ratings": "2"},
    "parse": {"raw": "raw.json", "out": "d"},
    "pairs": {"data_dir": "d"},
    "split": {"data_dir": "d"},
    "walks": {"data_dir": "d"},
    "ratings": {"raw": "r.csv", "out": "d"},
    "split-ratings": {"data_dir": "d"},
    "sequences": {"data_dir": "d"},
}
BY_NAME = {stage.name: stage for stage in STAGES}
SEEDED = [
    stage for stage in STAGES if "seed" in {f.name for f in dataclasses.fields(stage.options)}
]


def argv(stage, values: dict[str, str]) -> list[str]:
    """A command line of ``stage`` giving ``values`` (by field name)."""
    words = [stage.name]
    for f in dataclasses.fields(stage.options):
        if f.name in values:
            text = values[f.name]
            words += [text] if f.metadata.get("positional") else [flag(f), text]
    return words


def test_every_stage_has_its_required_arguments_listed():
    assert set(REQUIRED) == set(BY_NAME)


@pytest.mark.parametrize("stage", STAGES, ids=lambda stage: stage.name)
def test_the_command_lines_defaults_are_the_functions_defaults(stage):
    """One place for each default: the field's, which both the parser and the
    stage function's keyword default take."""
    args = build_parser().parse_args(argv(stage, REQUIRED[stage.name]))
    options = stage.options(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(stage.options)}
    )
    parameters = inspect.signature(stage.run).parameters
    assert set(parameters) == {f.name for f in dataclasses.fields(stage.options)}
    for f in dataclasses.fields(stage.options):
        if f.name in REQUIRED[stage.name]:
            assert parameters[f.name].default is inspect.Parameter.empty, f.name
            continue
        assert getattr(options, f.name) == default(f) == parameters[f.name].default, f.name


@pytest.mark.parametrize("stage", STAGES, ids=lambda stage: stage.name)
def test_every_range_in_the_metadata_is_one_the_function_refuses_outside(stage, tmp_path):
    """A value just outside a field's range is refused before anything runs, in one
    line naming the option."""
    required = {
        name: (tmp_path / value if not value.isdigit() else int(value))
        for name, value in REQUIRED[stage.name].items()
    }
    for f in dataclasses.fields(stage.options):
        limits = f.metadata
        outside = [
            *([limits["low"] - 1] if "low" in limits else []),
            *([limits["high"] + 1] if "high" in limits else []),
            *([limits["above"]] if "above" in limits else []),
            *([limits["below"]] if "below" in limits else []),
        ]
        for value in outside:
            with pytest.raises(PipelineError, match=f"^{flag(f)} "):
                stage.run(**{**required, f.name: value})
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("stage", SEEDED, ids=lambda stage: stage.name)
@pytest.mark.parametrize("seed", [-1, cli.MAX_SEED + 1, "7", 1.0, True])
def test_every_stage_refuses_a_seed_in_the_one_line_of_the_command_line(stage, seed, tmp_path):
    required = {
        name: (tmp_path / value if not value.isdigit() else int(value))
        for name, value in REQUIRED[stage.name].items()
    }
    with pytest.raises(PipelineError) as caught:
        stage.run(**required, seed=seed)
    assert str(caught.value) == f"{cli.SEED_RANGE}, got {seed!r}"
    assert f"--seed must be an integer from 0 to {cli.MAX_SEED}" == cli.SEED_RANGE


def test_a_numpy_integer_is_a_seed():
    np = pytest.importorskip("numpy")
    assert cli.check_seed(np.int64(cli.MAX_SEED)) == cli.MAX_SEED
    assert type(cli.check_seed(np.uint8(3))) is int

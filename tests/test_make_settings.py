"""What the make targets do with their settings: every make variable that `make help` or
the README documents reaches the commands of the stages it belongs to (and no other)
and their settings files, so changing it reruns them; a real run records it in the
stage's stats; a training resumes a checkpoint only when it is the start of the run
asked for."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import write_lines
from planted import write_planted
from repo import REPO

from pipeline.errors import PipelineError
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.train import train

pytestmark = pytest.mark.slow  # runs make

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")

PRODUCTS = ("demo", "electronics", "books")  # the Makefile's DATASET
RATINGS = ("ratings", "movielens")  # its RATINGS_DATASET
SEQUENCES = ("sequences",)  # RATINGS_DATASET split by time
DATASETS = PRODUCTS + RATINGS + SEQUENCES
VENV = ".venv/.made"  # the project environment, made with PY
ALL = ("*",)  # every stage the target runs
NAME = "n1"  # NAME=, and the dataset directory of the ratings and sequences runs


@dataclass(frozen=True)
class Reaches:
    """What a make variable set to ``value`` must do: put ``needle`` (an option and its
    value, which must be the option's last occurrence, or a path) into every command of
    ``stages[target]`` and into no other command of ``target``; as a ``setting`` (it
    decides the output) also into those stages' settings files, so that it reruns them."""

    value: str
    needle: str
    stages: dict[str, tuple[str, ...]]
    setting: bool = True


def each(targets: tuple[str, ...], stages: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return dict.fromkeys(targets, stages)


def expectations(tmp: Path) -> dict[str, Reaches]:
    """Every documented variable's expectation; paths under ``tmp`` (see inputs)."""
    raw, titles, python = tmp / "ratings.csv", tmp / "movies.csv", tmp / "bin" / "python3"
    train_ = each(DATASETS, ("train",))
    tables = {**each(PRODUCTS, ("similar",)), **each(RATINGS + SEQUENCES, ("recommend",))}
    return {
        "EPOCHS": Reaches("2", "--epochs 2", train_),
        "DIM": Reaches("6", "--dim 6", train_),
        "NEGATIVES": Reaches("3", "--negatives 3", train_),
        "BATCH_SIZE": Reaches("96", "--batch-size 96", train_),
        "SEED": Reaches(
            "11",
            "--seed 11",
            {
                **each(PRODUCTS, ("split", "walks", "train")),
                **each(RATINGS, ("split-ratings", "train")),
                "sequences": ("split-ratings", "sequences", "train"),
            },
        ),
        "VAL_PROP": Reaches(
            "0.35",
            "--val-prop 0.35",
            {**each(PRODUCTS, ("split",)), **each(RATINGS + SEQUENCES, ("split-ratings",))},
        ),
        "VAL_NEGATIVES": Reaches(
            "occurrences", "--negatives occurrences", each(PRODUCTS, ("split",))
        ),
        "DEMO_PRODUCTS": Reaches("500", "synthetic-500.json.gz", {"demo": ("synth", "parse")}),
        "MAX_LENGTH": Reaches("9", "--max-length 9", {"sequences": ("sequences",)}),
        "RAW": Reaches(
            str(raw),
            str(raw),
            {**each(PRODUCTS[1:], ("parse",)), **each(RATINGS + SEQUENCES, ("ratings",))},
        ),
        "TITLES": Reaches(str(titles), str(titles), each(RATINGS + SEQUENCES, ("ratings",))),
        "SCALE": Reaches("1:10", "--scale 1:10", each(RATINGS + SEQUENCES, ("ratings",))),
        "NAME": Reaches(NAME, f"/data/{NAME}", each(("ratings", "sequences"), ALL), setting=False),
        "QUIET": Reaches("1", "--quiet", each(DATASETS, ALL), setting=False),
        "ENGINE": Reaches(
            "spark", "--engine spark", each(PRODUCTS, ("parse", "pairs", "split")), setting=False
        ),
        "SPARK_MASTER": Reaches(
            "local[1]",
            "--spark-master local[1]",
            each(PRODUCTS, ("parse", "pairs", "split")),
            setting=False,
        ),
        "PY": Reaches(str(python), f"{python} -m venv", {VENV: ("venv",)}, setting=False),
        "SIMILAR_ALL": Reaches("1", "--all", tables, setting=False),
        "SIMILAR_K": Reaches("7", "-k 7", tables),
        "SIMILAR_METHOD": Reaches("ann", "--method ann", tables),
    }


def documented() -> set[str]:
    """The variables `make help` shows (NAME=...) and the README's "Make variables:" names."""
    shown = make_in(REPO, "help").stdout
    readme = (REPO / "README.md").read_text()
    sentence = readme.split("Make variables:", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"\b([A-Z][A-Z0-9_]*)=", shown)) | set(
        re.findall(r"`([A-Z][A-Z0-9_]*)(?:=[^`]*)?`", sentence)
    )


def make_in(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["make", "--no-print-directory", *args], cwd=cwd, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done


def installed(tmp: Path) -> list[str]:
    """Settings that take this interpreter's environment as installed (tests/repo.py)."""
    stamp = tmp / "installed"
    stamp.touch()
    return [f"VENV={sys.prefix}", f"INSTALLED={stamp}", f"DATA={tmp / 'data'}"]


def inputs(tmp: Path) -> None:
    """A small ratings file and its titles, for RAW= and TITLES=."""
    lines = ["userId,movieId,rating,timestamp"]
    for user in range(1, 41):
        lines += [f"{user},{i},{1 + (user * i) % 5},{user * 100 + i}" for i in range(1, 31)]
    write_lines(tmp / "ratings.csv", lines)
    titles = ["movieId,title,genres"] + [f"{i},Movie {i} (2001),Drama" for i in range(1, 31)]
    write_lines(tmp / "movies.csv", titles)


def planned(target: str, tmp: Path, settings: list[str]) -> tuple[dict, dict]:
    """``make -n target`` from an empty data directory: each stage's commands, and each
    settings file's text."""
    if target == VENV:  # in an empty directory, which has no .venv to take
        (tmp / "empty").mkdir(exist_ok=True)
        done = make_in(tmp / "empty", "-n", "-f", str(REPO / "Makefile"), target, *settings)
    else:
        done = make_in(REPO, "-n", target, *installed(tmp), *settings)
    commands, texts = {}, {}
    for line in done.stdout.splitlines():
        written = re.match(r"printf '%s\\n' '(.*?)' \| cmp -s - (\S+)", line)
        if written:
            texts[Path(written[2]).name] = written[1]
        elif stage := stage_of(line):
            commands.setdefault(stage, []).append(line)
    return commands, texts


def stage_of(command: str) -> str | None:
    words = command.split()
    if "-m" not in words:
        return None
    module = words[words.index("-m") + 1 :]
    return module[1] if module[0] in ("pipeline", "recsys_stream") else module[0]


def holds(command: str, needle: str) -> bool:
    """``needle`` is in ``command``; an option only as its last occurrence (later flags win)."""
    if not needle.startswith("--"):
        return needle in command
    option, *value = needle.split(" ", 1)
    words = shlex.split(command)
    at = [i for i, word in enumerate(words) if word == option]
    return bool(at) and words[at[-1] + 1 : at[-1] + 1 + len(value)] == value


def test_every_documented_make_variable_has_an_expectation(tmp_path):
    known = set(expectations(tmp_path))
    assert not documented() - known, "documented, with no expectation here: add one"
    assert not known - documented(), "expected here, documented nowhere"


@needs_make
@pytest.mark.parametrize("target", [*DATASETS, VENV])
def test_each_variable_reaches_the_commands_and_settings_of_its_stages_only(target, tmp_path):
    inputs(tmp_path)
    expected = expectations(tmp_path)
    commands, texts = planned(target, tmp_path, [f"{k}={e.value}" for k, e in expected.items()])
    wrong = []
    for name, e in expected.items():
        want = set(commands) if e.stages.get(target) == ALL else set(e.stages.get(target, ()))
        every = {s for s, lines in commands.items() if all(holds(c, e.needle) for c in lines)}
        some = {s for s, lines in commands.items() if any(holds(c, e.needle) for c in lines)}
        if want - every:
            wrong.append(f"{name}: {e.needle!r} missing from {sorted(want - every)}")
        if some - want:
            wrong.append(f"{name}: {e.needle!r} reaches {sorted(some - want)} too")
        for stage in want & set(texts) if e.setting else ():
            if e.needle not in texts[stage]:
                wrong.append(f"{name}: {e.needle!r} missing from .make/{stage}: {texts[stage]!r}")
    assert not wrong, "\n".join(wrong)


@needs_make
def test_the_makefile_uses_each_variable_it_defines_and_defines_each_it_uses(tmp_path):
    inputs(tmp_path)
    source = (REPO / "Makefile").read_text()
    assigned = re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(\??=|:=)", source, re.M)
    defined = {name for name, _ in assigned} | set(re.findall(r"^define (\w+)$", source, re.M))
    unused = {name for name in defined if not re.search(rf"\$\$?\((call )?{name}\b", source)}
    assert unused == set(), "defined, never used"
    set_twice, depth = [], 0  # set (not ?=: a default) twice outside ifeq/ifneq branches
    for line in source.splitlines():
        depth += line.startswith(("ifeq", "ifneq", "ifdef", "ifndef")) - line.startswith("endif")
        assigned = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*:?=", line)
        if assigned and depth == 0:
            set_twice.append(assigned[1])
    assert {name for name in set_twice if set_twice.count(name) > 1} == set(), "defined twice"
    warned = set()
    for target in DATASETS:
        settings = [f"RAW={tmp_path / 'ratings.csv'}", f"NAME={NAME}"]
        done = make_in(
            REPO, "-n", "--warn-undefined-variables", target, *installed(tmp_path), *settings
        )
        warned |= set(re.findall(r"undefined variable '([^']+)'", done.stderr))
    # From the environment, or from the wrappers' command line to their sub-make.
    outside = {"VIRTUAL_ENV", "CONDA_PREFIX", "RATINGS_DATASET_OF", "SEQUENCES_DATASET_OF"}
    assert warned - outside - {"4"} == set()  # $(4): RATINGS_DATASET's optional argument


def recorded(tmp: Path) -> dict[str, list[tuple[str, str, str, object]]]:
    """Where a real run records each variable of ``expectations``: (dataset, stats file,
    key, value), a key in ``config`` as ``config.KEY``. One training: every training
    command takes the same flags (test_each_variable_reaches...)."""

    def trained(key: str, value) -> list:
        return [(NAME, "runs/mf_bias/summary.json", key, value)]

    return {
        "EPOCHS": [*trained("config.epochs", 2), *trained("epochs", 2)],
        "DIM": trained("config.dim", 6),
        "NEGATIVES": trained("config.negatives", 3),
        "BATCH_SIZE": trained("config.batch_size", 96),
        "SEED": [
            *trained("config.seed", 11),
            ("demo", "split.json", "seed", 11),
            ("demo", "walks.json", "seed", 11),
            (NAME, "split-ratings.json", "seed", 11),
            (NAME, "sequences.json", "seed", 11),
        ],
        "VAL_PROP": [
            ("demo", "split.json", "val_prop", 0.35),
            (NAME, "split-ratings.json", "val_prop", 0.35),
        ],
        "VAL_NEGATIVES": [("demo", "split.json", "negatives", "occurrences")],
        "DEMO_PRODUCTS": [("demo", "parse.json", "products", 500)],
        "MAX_LENGTH": [(NAME, "sequences.json", "max_length", 9)],
        "RAW": [(NAME, "ratings.json", "raw", str(tmp / "ratings.csv"))],
        "TITLES": [(NAME, "ratings.json", "items_titled", 30)],
        "SCALE": [(NAME, "ratings.json", "scale.min", 1), (NAME, "ratings.json", "scale.max", 10)],
        "SIMILAR_K": [(NAME, "runs/mf_bias/recommend.json", "k", 7)],
        "SIMILAR_METHOD": [(NAME, "runs/mf_bias/recommend.json", "method", "ann")],
    }


# What a real run does not record, and why.
NOT_RECORDED = {
    "NAME": "where the stages write: the real run reads every stats file under it",
    "QUIET": "silences progress bars only",
    "ENGINE": "both engines write the same files (tests/test_spark_stages.py)",
    "SPARK_MASTER": "where Spark runs, with ENGINE=spark",
    "PY": "the interpreter that makes .venv",
    "SIMILAR_ALL": "which tables a dataset's target asks for (tests/test_end_to_end.py)",
}


@needs_make
def test_a_real_run_records_each_setting_in_its_stages_stats(tmp_path):
    """The demo's stages up to the walks and a sequences dataset's up to one training and
    its table, run by make (as its targets' sub-make does) with every documented variable
    that runs."""
    inputs(tmp_path)
    expected, where = expectations(tmp_path), recorded(tmp_path)
    assert set(where) | set(NOT_RECORDED) == set(expected)
    unused = ("ENGINE", "SPARK_MASTER", "PY")  # Spark's, and the one that makes .venv
    given = [f"{k}={e.value}" for k, e in expected.items() if k not in unused]
    data = tmp_path / "data"
    goals = [data / "demo" / "walks.json", data / NAME / "sequences.json"]
    goals += [data / NAME / "runs" / "mf_bias" / x for x in ("summary.json", "recommend.json")]
    make_in(REPO, *map(str, goals), f"SEQUENCES_DATASET_OF={NAME}", *installed(tmp_path), *given)
    wrong = []
    for name, places in where.items():
        for dataset, stats, key, value in places:
            found = json.loads((data / dataset / stats).read_text())
            for part in key.split("."):
                found = found[part]
            if found != value:
                wrong.append(f"{name}: {dataset}/{stats} {key} is {found!r}, not {value!r}")
    assert not wrong, "\n".join(wrong)


# The resume decision (recsys_stream/core/runs.py), which make's --resume auto relies on.
FAST = dict(batch_size=256, lr=0.05, eval_every=20, eval_sample=1000)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_planted(tmp_path_factory.mktemp("small"), products=500, pairs=3000)


def model_bytes(data: Path, name: str) -> bytes:
    return (data / "runs" / name / "model.pt").read_bytes()


def test_fewer_epochs_than_the_checkpoint_holds_start_afresh(small, capsys):
    train(small, TrainConfig(**FAST, epochs=2), name="fewer", quiet=True)
    one = TrainConfig(**FAST, epochs=1)
    checkpoint = small / "runs" / "fewer" / "checkpoint.pt"
    with pytest.raises(PipelineError) as refused:
        train(small, one, name="fewer", resume=True, quiet=True)
    assert str(refused.value) == (
        f"{checkpoint}: is at epoch 2, past the --epochs 1 asked for; rerun without --resume"
    )
    capsys.readouterr()
    summary = train(small, one, name="fewer", resume="auto", quiet=True)
    assert capsys.readouterr().err == (
        f"note: {checkpoint}: is at epoch 2, past the --epochs 1 asked for; starting afresh\n"
    )
    assert (summary["epochs"], summary["config"]["epochs"], summary["parts"]) == (1, 1, 1)
    train(small, one, name="fresh", quiet=True)
    assert model_bytes(small, "fewer") == model_bytes(small, "fresh")


def test_other_epochs_under_one_cosine_start_afresh(small, capsys):
    cosine = {**FAST, "schedule": "cosine"}
    train(small, TrainConfig(**cosine, epochs=1), name="cosine", quiet=True)
    capsys.readouterr()
    summary = train(
        small, TrainConfig(**cosine, epochs=2), name="cosine", resume="auto", quiet=True
    )
    checkpoint = small / "runs" / "cosine" / "checkpoint.pt"
    assert capsys.readouterr().err == (
        f"note: {checkpoint}: made for --epochs 1 under --schedule cosine, whose learning rate "
        "in every epoch depends on --epochs (1 -> 2); starting afresh\n"
    )
    assert (summary["epochs"], summary["parts"], summary["epoch_start_lr"]) == (2, 1, [0.05, 0.025])


def test_more_epochs_continue_a_cyclic_cosine_bit_for_bit(small):
    """cosine-cyclic's learning rate depends on the step's place in its cycle, not on
    --epochs: a second epoch resumed gives the model of two epochs straight."""
    cyclic = {**FAST, "schedule": "cosine-cyclic"}
    train(small, TrainConfig(**cyclic, epochs=1), name="cyclic-parts", quiet=True)
    two = TrainConfig(**cyclic, epochs=2)
    summary = train(small, two, name="cyclic-parts", resume="auto", quiet=True)
    assert (summary["epochs"], summary["parts"]) == (2, 2)
    train(small, two, name="cyclic-straight", quiet=True)
    assert model_bytes(small, "cyclic-parts") == model_bytes(small, "cyclic-straight")


@needs_make
def test_a_failed_stage_fails_make_without_saying_the_report_is_up_to_date(tmp_path):
    bad = write_lines(tmp_path / "bad.csv", ["not,a,ratings,file", "x,y,z,w"])
    settings = [f"RAW={bad}", f"NAME={NAME}", "QUIET=1", *installed(tmp_path)]
    done = subprocess.run(
        ["make", "--no-print-directory", "ratings", *settings],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: "), done.stderr
    assert "up to date" not in done.stdout

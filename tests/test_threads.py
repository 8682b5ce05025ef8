"""The thread tuner: it follows the faster count, reacts to load, and never changes results."""

from __future__ import annotations

import pytest
import torch
from planted import write_planted

from recsys_stream.core import threads
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.losses import LOSSES
from recsys_stream.core.threads import ThreadTuner
from recsys_stream.core.train import train
from recsys_stream.core.trained import load_run
from recsys_stream.pairs.models import build_model
from recsys_stream.pairs.steps import FusedStep
from recsys_stream.pairs.stream import Batch


class Machine:
    """A simulated machine: the seconds a step takes at each thread count, by phase."""

    def __init__(self, monkeypatch):
        self.now = 0.0
        monkeypatch.setattr(threads.torch, "get_num_threads", lambda: 2)
        self.cost = {1: 1.0, 2: 0.6}  # quiet: a second thread is 40% faster
        self.threads = 1
        monkeypatch.setattr(threads.time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(threads.torch, "set_num_threads", self.set_threads)

    def set_threads(self, count: int) -> None:
        self.threads = count

    def run(self, tuner: ThreadTuner, steps: int) -> tuple[float, list[int]]:
        """Run ``steps`` steps; the time they took and the count each ran at."""
        started, used = self.now, []
        for _ in range(steps):
            used.append(self.threads)
            self.now += self.cost[self.threads]
            tuner.step_done(100)
        return self.now - started, used


def test_a_quiet_machine_settles_on_the_faster_count(monkeypatch):
    machine = Machine(monkeypatch)
    tuner = ThreadTuner()
    seconds, used = machine.run(tuner, 5000)
    assert used[-1000:].count(2) > 990  # rare short trials of one thread
    assert seconds < 1.02 * 5000 * 0.6  # within 2% of always running two


def test_load_moves_it_to_one_thread_quickly_and_back_when_it_ends(monkeypatch):
    machine = Machine(monkeypatch)
    tuner = ThreadTuner()
    machine.run(tuner, 3000)
    machine.cost = {1: 1.0, 2: 25.0}  # another process now spins against the team
    seconds, used = machine.run(tuner, 20_000)
    assert used.index(1) <= 2  # the collapse ends the window at once
    assert seconds < 1.03 * 20_000  # looking at two threads now and then costs under 3%
    machine.cost = {1: 1.0, 2: 0.6}  # the load ends: found at the next trial at the latest
    _, used = machine.run(tuner, threads.MAX_WAIT * threads.WINDOW + 1000)
    assert used[-1000:].count(2) > 990


@pytest.mark.parametrize(
    ("cost", "best"),
    [
        ({1: 1.0, 2: 0.6}, 0.6),
        ({1: 1.0, 2: 2.5}, 1.0),
        ({1: 1.0, 2: 3.3}, 1.0),
        ({1: 1.0, 2: 14.0}, 1.0),
    ],
)
def test_looking_costs_little_even_in_a_short_run(monkeypatch, cost, best):
    """520 steps (a short training): quiet, or beside loads that slow two threads 2.5-14x.

    3.3x and 14x are what one and two busy processes did to a two-thread step
    here (bench_busy); one step of a trial at 14x is already 2.5% of the run,
    so a second look must wait for the time it would cost to be earned.
    """
    machine = Machine(monkeypatch)
    machine.cost = cost
    seconds, _ = machine.run(ThreadTuner(), 520)
    assert seconds < 1.03 * 520 * best


def test_time_spent_between_steps_is_not_held_against_a_count(monkeypatch):
    """A learning-curve point during the first trial of two threads: they still win."""
    machine = Machine(monkeypatch)
    tuner = ThreadTuner()
    machine.run(tuner, threads.TRIAL + 2)  # the first look at one thread, into the trial
    assert tuner.threads == 2
    with tuner.paused():
        machine.now += 50.0  # an evaluation, as long as 50 steps
    machine.run(tuner, threads.TRIAL)  # the trial's end
    assert tuner.current == 2


def test_a_second_thread_that_gains_nothing_is_not_kept(monkeypatch):
    machine = Machine(monkeypatch)
    machine.cost = {1: 1.0, 2: 0.99}  # under the 5% a switch needs
    tuner = ThreadTuner()
    _, used = machine.run(tuner, 3000)
    assert used[-1000:].count(1) > 990


@pytest.mark.parametrize("fixed", [1, 2])
def test_a_fixed_count_is_kept_without_trials(monkeypatch, fixed):
    machine = Machine(monkeypatch)
    machine.cost = {1: 1.0, 2: 25.0}
    tuner = ThreadTuner(fixed)
    _, used = machine.run(tuner, 500)
    assert set(used) == {fixed} and tuner.history == []


@pytest.mark.parametrize("shared", [0, 32])
def test_the_step_gives_the_same_bits_on_one_and_two_threads(shared):
    generator = torch.Generator().manual_seed(0)
    anchor = torch.randint(0, 5000, (2048,), generator=generator)
    others = torch.randint(0, 5000, (2048, 1 if shared else 6), generator=generator)
    batch = Batch(anchor, others, torch.rand(2048, generator=generator))
    if shared:  # its matrix products too
        batch = Batch(anchor, others, batch.weight, torch.randint(0, 5000, (shared,)), 5 / shared)
    results = []
    for count in (1, 2):
        torch.set_num_threads(count)
        model = build_model("mf_bias", 5000, 32, init_std=0.1, seed=1)
        step = FusedStep(model, LOSSES["continuous"], 1e-3, 1.0)
        for _ in range(3):
            step(batch, 0.01)
        results.append([t.clone() for t in model.state_dict().values()])
    for one, two in zip(*results):
        assert torch.equal(one, two)


@pytest.mark.parametrize("fixed", [1, 2])
def test_training_gives_the_same_weights_whatever_the_threads(tmp_path, fixed):
    data = write_planted(tmp_path, products=800, pairs=8000, row_group=1000)
    config = TrainConfig(epochs=1, batch_size=128, eval_every=25, eval_sample=1000)
    train(data, config, name="tuned", quiet=True)
    train(data, config, name="fixed", threads=fixed, quiet=True)
    tuned, fixed_run = (load_run(data / "runs" / name)[0] for name in ("tuned", "fixed"))
    for a, b in zip(tuned.state_dict().values(), fixed_run.state_dict().values()):
        assert torch.equal(a, b)

"""Batches made ahead on a thread: the same items in the same order, errors where they were,
and a consumer that stops early stops the producer."""

from __future__ import annotations

import threading
import time

import pytest

from recsys_stream.core.prefetch import ahead


def test_items_arrive_in_order_and_all_of_them():
    assert list(ahead(iter(range(1000)))) == list(range(1000))
    assert list(ahead(iter([]))) == []


def test_an_error_in_the_stream_is_raised_after_the_items_before_it():
    def stream():
        yield 1
        yield 2
        raise ValueError("row group 3 is corrupt")

    got = []
    with pytest.raises(ValueError, match="row group 3 is corrupt"):
        for item in ahead(stream()):
            got.append(item)
    assert got == [1, 2]


def test_the_producer_runs_at_most_depth_ahead_and_stops_with_the_consumer():
    made = []

    def stream():
        for i in range(10_000):
            made.append(i)
            yield i

    items = ahead(stream(), depth=2)
    assert next(items) == 0
    time.sleep(0.2)  # the producer fills the queue and waits
    assert len(made) <= 4  # one taken, two queued, one waiting to be put
    items.close()
    assert len(made) <= 4
    assert not any(t.name == "stream" and t.is_alive() for t in threading.enumerate())


def test_items_are_made_on_another_thread():
    makers = set()

    def stream():
        for i in range(3):
            makers.add(threading.current_thread())
            yield i

    assert list(ahead(stream())) == [0, 1, 2]
    assert makers and threading.current_thread() not in makers

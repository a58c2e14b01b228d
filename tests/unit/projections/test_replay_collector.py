"""A replay pauses the cyclic garbage collector and always gives it back as it found it."""

from __future__ import annotations

import gc
import threading

import pytest

from projections.replay import collector_paused


def test_the_collector_is_off_inside_and_back_on_after_even_when_the_fold_raises() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("a broken log")
    assert gc.isenabled()


def test_overlapping_replays_leave_it_off_until_the_last_ends() -> None:
    inside, release = threading.Event(), threading.Event()

    def slow_replay() -> None:
        with collector_paused():
            inside.set()
            release.wait(5)

    other = threading.Thread(target=slow_replay)
    other.start()
    inside.wait(5)
    with collector_paused():
        pass
    assert not gc.isenabled()  # the other replay still folds
    release.set()
    other.join(5)
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_process_stays_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()

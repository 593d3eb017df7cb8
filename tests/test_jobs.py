"""Background jobs: a progress-reporting engine call run as a generator worker."""

from __future__ import annotations

import threading
import time

import pytest

from napari_wsol import jobs


def _drain(gen):
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as stop:
            return reports, stop.value


def test_stream_yields_progress_and_returns_the_result():
    def call(n, *, progress, should_stop):
        for i in range(n):
            progress(i, n)
        return "done"

    reports, result = _drain(jobs.stream(call, threading.Event(), 3))
    assert reports == [(0, 3), (1, 3), (2, 3)]
    assert result == "done"


def test_stream_reraises_the_call_s_error():
    def call(*, progress, should_stop):
        raise ValueError("bad slide")

    with pytest.raises(ValueError, match="bad slide"):
        _drain(jobs.stream(call, threading.Event()))


def test_cancel_reaches_the_call_between_steps_and_keeps_its_result():
    stop = threading.Event()

    def call(*, progress, should_stop):
        done = 0
        for i in range(1000):
            if should_stop():
                break
            progress(i)
            done += 1
            time.sleep(0.001)  # a step's work
        return done

    gen = jobs.stream(call, stop)
    next(gen)
    stop.set()  # what the Cancel button does
    reports, done = _drain(gen)
    assert done < 1000  # it stopped early, and returned normally with what it had
    assert len(reports) + 1 == done

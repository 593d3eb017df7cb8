"""Background jobs: a progress-reporting engine call run as a generator worker."""

from __future__ import annotations

import os
import sys
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


def test_a_held_call_waits_after_its_first_report_until_released():
    released = threading.Event()
    seen_before_release = []

    def call(*, progress, should_stop):
        progress(0, 3)  # e.g. "the store exists": the GUI makes its layers now
        seen_before_release.append(released.is_set())
        for i in range(1, 3):
            progress(i, 3)
        return "done"

    gen = jobs.stream(call, threading.Event(), hold_after_first=released)
    assert next(gen) == (0, 3)
    time.sleep(0.2)  # without the hold, the call would have run to its end by now
    assert not seen_before_release
    released.set()
    reports, result = _drain(gen)
    assert seen_before_release == [True]
    assert reports == [(1, 3), (2, 3)] and result == "done"


def test_a_held_call_goes_on_when_cancelled_or_after_the_limit(monkeypatch):
    def call(*, progress, should_stop):
        progress(0, 2)
        progress(1, 2)
        return should_stop()

    stop = threading.Event()
    gen = jobs.stream(call, stop, hold_after_first=threading.Event())
    next(gen)
    stop.set()  # Cancel while held: the call is not left waiting for the GUI
    assert _drain(gen) == ([(1, 2)], True)

    monkeypatch.setattr(jobs, "HOLD_LIMIT", 0.1)
    start = time.perf_counter()
    reports, result = _drain(
        jobs.stream(call, threading.Event(), hold_after_first=threading.Event())
    )
    assert reports == [(0, 2), (1, 2)] and result is False
    assert time.perf_counter() - start < 5  # a GUI that never answers costs HOLD_LIMIT


def _niceness(tid: int) -> int:
    stat = open(f"/proc/self/task/{tid}/stat").read()
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19: nice


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities: Linux")
@pytest.mark.parametrize("priority", ["idle", 10])
def test_a_job_and_the_threads_it_starts_yield_the_cpu_to_the_gui(priority, monkeypatch):
    import torch

    monkeypatch.setattr(jobs, "JOB_PRIORITY", priority)

    def background(tid: int) -> bool:
        if priority == "idle":
            return os.sched_getscheduler(tid) == os.SCHED_IDLE
        return _niceness(tid) == priority

    def call(*, progress, should_stop):
        seen: list[bool] = []
        helper = threading.Thread(target=lambda: seen.append(background(threading.get_native_id())))
        helper.start()
        helper.join()
        before = {int(t) for t in os.listdir("/proc/self/task")}
        x = torch.rand(512, 512)
        for _ in range(20):  # starts torch's OpenMP team for this thread
            x = torch.tanh(x @ x.T)
        team = {
            int(t): background(int(t))
            for t in os.listdir("/proc/self/task")
            if int(t) not in before
        }
        return background(threading.get_native_id()), seen[0], team

    gui = threading.get_native_id()
    gui_before = (os.sched_getscheduler(gui), _niceness(gui))
    _, (own, helper, team) = _drain(jobs.stream(call, threading.Event()))
    assert own and helper
    if torch.get_num_threads() > 1:
        assert team and all(team.values()), team
    assert (os.sched_getscheduler(gui), _niceness(gui)) == gui_before  # the caller's unchanged

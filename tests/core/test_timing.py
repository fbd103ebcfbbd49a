"""Stage timings: nested stages are exclusive, they add up with "other" to the total,
background work is kept apart, and the summary line names the stages. A fake clock
makes every figure exact."""

import threading

import pytest

from transferkit.core import timing
from transferkit.core.timing import (StageTimer, format_summary, in_background, process_age,
                                     stage)


@pytest.fixture
def clock(monkeypatch):
    """A clock that moves only when told: `clock(wall, cpu)` advances it."""
    now = {"wall": 100.0, "cpu": 10.0}

    def advance(wall, cpu=None):
        now["wall"] += wall
        now["cpu"] += wall if cpu is None else cpu

    monkeypatch.setattr(timing.time, "perf_counter", lambda: now["wall"])
    monkeypatch.setattr(timing.time, "process_time", lambda: now["cpu"])
    return advance


def test_nested_stages_count_once_and_add_up_to_the_total(clock):
    timer = StageTimer()
    with timer.active():
        with stage("phase 1"):
            clock(1.0)
            with stage("extraction"):
                clock(4.0, cpu=7.0)  # several threads: more CPU than wall
            clock(2.0)
        clock(0.5)  # no stage: "other"
    record = timer.to_json()
    assert record["stages"] == {"phase 1": {"wall": 3.0, "cpu": 3.0},
                                "extraction": {"wall": 4.0, "cpu": 7.0},
                                "other": {"wall": 0.5, "cpu": 0.5}}
    assert record["total"] == {"wall": 7.5, "cpu": 10.5}
    assert format_summary(record) == "7.5 s: phase 1 3.0, extraction 4.0, other 0.5"


def test_a_stage_entered_twice_accumulates_and_short_ones_leave_the_summary(clock):
    timer = StageTimer()
    with timer.active():
        for _ in range(3):
            with stage("checkpointing"):
                clock(5.0)
        with stage("tta"):
            clock(0.2)
    record = timer.to_json()
    assert record["stages"]["checkpointing"]["wall"] == 15.0
    assert format_summary(record) == "15 s: checkpointing 15"  # under 0.5 s: left out


def test_stage_outside_an_active_timer_records_nothing(clock):
    timer = StageTimer()
    with stage("scan"):
        clock(1.0)
    assert timer.stages == {}


def test_background_work_is_recorded_apart_and_only_the_wait_is_a_stage(clock):
    started, release = threading.Event(), threading.Event()

    def work():
        started.set()
        release.wait(5)
        return "drawn"

    timer = StageTimer()
    with timer.active():
        job = in_background("report", work)
        started.wait(5)
        with stage("save"):
            clock(2.0)
        with stage("report"):
            release.set()
            assert job.join() == "drawn"
        failing = in_background("other work", lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.join()
    record = timer.to_json()
    assert record["stages"]["save"]["wall"] == 2.0
    assert record["stages"]["report"]["wall"] == 0.0  # done by the time it was awaited
    assert set(record["background"]) == {"report", "other work"}
    assert record["background"]["report"]["wall"] == 2.0  # beside "save"


def test_stages_from_another_thread_are_not_timed():
    timer = StageTimer()

    def inside():
        with stage("drawn elsewhere"):
            pass

    with timer.active():
        in_background("work", inside).join()
    assert "drawn elsewhere" not in timer.stages


def test_start_up_is_the_process_life_before_the_timer():
    before = process_age()
    assert before is not None and before > 0  # Linux: from /proc/self/stat
    record = StageTimer.since_process_start().to_json()
    assert list(record["stages"])[0] == "start-up"
    # (to_json rounds to milliseconds)
    assert before - 1e-3 <= record["stages"]["start-up"]["wall"] <= process_age() + 1e-3

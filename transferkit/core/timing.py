"""Where a run's seconds go: wall and CPU seconds per stage, and a one-line summary.

    timer = StageTimer()
    with timer.active():                  # `stage` anywhere below records into it
        with stage("scan"):
            load_data(...)
        with stage("phase 1"):
            with stage("extraction"):     # nested: counted as extraction, not phase 1
                ...
    print(timer.summary())                # "52 s: extraction 14, phase 1 6, ..."

A stage's time excludes the stages run inside it, so the stages add up to the time the
timer was active; what no stage claimed is "other". CPU seconds are the process's (all
threads: TensorFlow's pools make them exceed wall time on several cores).
`StageTimer.since_process_start()` also counts the process's start-up (interpreter,
imports, argument parsing) from the process's own start time, for a command that times
itself as a user would.
"""

import contextlib
import os
import threading
import time

STARTUP = "start-up"
OTHER = "other"
_active = []  # the timers `stage` records into (a stack: the innermost is used)
_lock = threading.Lock()


def process_age():
    """Seconds since this process started (from /proc/self/stat on Linux), or None
    where the start time is not available."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22 is the start time in clock ticks after boot; the command name
            # (field 2) may hold spaces, so count from its closing parenthesis.
            start = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class StageTimer:
    """Wall and CPU seconds per named stage, in the order stages first ran."""

    def __init__(self):
        self.stages = {}  # name -> [wall, cpu]
        self._stack = []  # open stages: [name, wall start, cpu start]
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        self._before = (0.0, 0.0)  # start-up: time before this timer existed

    @classmethod
    def since_process_start(cls):
        """A timer whose first stage, "start-up", is the process's life so far (wall
        from its start time, CPU all it used); without a start time, none."""
        timer = cls()
        age = process_age()
        if age is not None:
            timer._before = (age, timer._cpu0)
            timer.add(STARTUP, age, timer._cpu0)
        return timer

    def add(self, name, wall, cpu):
        """Add `wall` and `cpu` seconds to stage `name`."""
        with _lock:
            totals = self.stages.setdefault(name, [0.0, 0.0])
            totals[0] += wall
            totals[1] += cpu

    @contextlib.contextmanager
    def stage(self, name):
        """Time the block as stage `name` (less the stages nested inside it)."""
        now = (time.perf_counter(), time.process_time())
        if self._stack:  # the enclosing stage stops counting while this one runs
            self._pause(self._stack[-1], now)
        self._stack.append([name, *now])
        try:
            yield
        finally:
            end = (time.perf_counter(), time.process_time())
            self._pause(self._stack.pop(), end)
            if self._stack:
                self._stack[-1][1:] = end

    def _pause(self, entry, now):
        self.add(entry[0], now[0] - entry[1], now[1] - entry[2])
        entry[1:] = now

    @contextlib.contextmanager
    def active(self):
        """Make this the timer module-level `stage` calls record into."""
        _active.append(self)
        try:
            yield self
        finally:
            _active.remove(self)

    def total(self):
        """(wall, CPU) seconds since the timer started, start-up included."""
        return (time.perf_counter() - self._wall0 + self._before[0],
                time.process_time() - self._cpu0 + self._before[1])

    def to_json(self):
        """{"total": {"wall", "cpu"}, "stages": {name: {"wall", "cpu"}}} in seconds; the
        time no stage claimed is the stage "other"."""
        wall, cpu = self.total()
        stages = {k: list(v) for k, v in self.stages.items()}
        rest = (wall - sum(v[0] for v in stages.values()),
                cpu - sum(v[1] for v in stages.values()))
        if rest[0] > 0.005:
            stages[OTHER] = [rest[0] + stages.get(OTHER, [0, 0])[0],
                             max(0.0, rest[1]) + stages.get(OTHER, [0, 0])[1]]
        return {"total": {"wall": round(wall, 3), "cpu": round(cpu, 3)},
                "stages": {k: {"wall": round(w, 3), "cpu": round(c, 3)}
                           for k, (w, c) in stages.items()}}

    def summary(self):
        """"52 s: extraction 14, phase 1 6, ..." (wall seconds; stages under 0.5 s
        left out)."""
        return format_summary(self.to_json())


def format_summary(record):
    """The one-line summary of a `StageTimer.to_json()` record."""
    def seconds(value):
        return f"{value:.1f}" if value < 10 else f"{value:.0f}"

    shown = [f"{name} {seconds(v['wall'])}" for name, v in record["stages"].items()
             if v["wall"] >= 0.5]
    return f"{seconds(record['total']['wall'])} s: " + (", ".join(shown) or "no stage")


@contextlib.contextmanager
def stage(name):
    """Time the block as stage `name` of the active `StageTimer` (none: not timed)."""
    if not _active:
        yield
        return
    with _active[-1].stage(name):
        yield

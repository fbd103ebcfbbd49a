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
threads: TensorFlow's pools make them exceed wall time on several cores). Work run in
a thread beside the stages (`in_background`) is recorded apart, with its own wall time
and its thread's CPU time; the stage that waits for it counts only the wait.
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
        self.background = {}  # name -> [wall, thread CPU]: work beside the stages
        self._stack = []  # open stages: [name, wall start, cpu start]
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        self._owner = threading.get_ident()  # stages are the creating thread's
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
        """Time the block as stage `name` (less the stages nested inside it); in
        another thread than the timer's, not timed (see `in_background`)."""
        if threading.get_ident() != self._owner:
            yield
            return
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
        out = {"total": {"wall": round(wall, 3), "cpu": round(cpu, 3)},
               "stages": {k: {"wall": round(w, 3), "cpu": round(c, 3)}
                          for k, (w, c) in stages.items()}}
        if self.background:
            out["background"] = {k: {"wall": round(w, 3), "cpu": round(c, 3)}
                                 for k, (w, c) in self.background.items()}
        return out

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


class Background:
    """Work running in a thread beside the stages: `join()` waits for it and returns
    its result (or raises its error)."""

    def __init__(self, name, function, args, kwargs):
        self.timer = _active[-1] if _active else None
        self.result, self.error = None, None

        def run():
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                self.result = function(*args, **kwargs)
            except BaseException as error:  # noqa: BLE001 - re-raised by join
                self.error = error
            if self.timer is not None:
                with _lock:
                    totals = self.timer.background.setdefault(name, [0.0, 0.0])
                    totals[0] += time.perf_counter() - wall
                    totals[1] += time.thread_time() - cpu

        self.thread = threading.Thread(target=run, name=f"transferkit-{name}")
        self.thread.start()

    def join(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result


def in_background(name, function, *args, **kwargs):
    """Start `function(*args, **kwargs)` in a thread, timed as background work `name`
    of the active `StageTimer`; returns its `Background` (join it before relying on
    what it writes)."""
    return Background(name, function, args, kwargs)

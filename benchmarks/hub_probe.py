"""Measure how long the gevent hub was blocked: a greenlet that wakes every ``interval`` seconds
and records how late it woke. A late wake-up means something held the hub (a blocking call).

Phases: the code under test may say what it is doing (``probe.phase = "scan"``); each late
wake-up is then charged to every phase that was active between the probe's sleep and its wake-up
(a block that spans the end of a mount and the start of a scan counts for both: conservative),
giving ``max_by_phase``.

Who blocked (``trace=True``): a ``greenlet.settrace`` hook times each greenlet's uninterrupted
runs (from the switch into it to the switch out of it): ``longest_run`` gives the longest run of
the greenlet that entered the probe, per phase (``"main:tracker"``, ``"main:scan"``), of the hub,
and of every other greenlet by name. A run of the main greenlet during ``"tracker"`` is the
plugin's own code holding the hub; a long run of another greenlet during a mount (a writer
finishing a scan, say) shows in ``max_by_phase`` but not there.

Wall clock or CPU: a run timed by the wall clock includes the time the operating system did not
run the process at all (another process on the core, a virtual machine's vCPU descheduled). On
the 2-core VMs we measure on, an idle process whose only greenlet sleeps sees "runs" and hub
blocks of up to ~10 ms from that alone (``benchmarks/reader_latency.py`` measures it as its
baseline). ``longest_cpu_run`` times the same runs in the thread's CPU time
(``time.thread_time``): what the code itself held the hub for, preemption excluded.
``max_cpu_block`` is ``max_block`` measured so: the thread's CPU time spent while the probe
slept (every greenlet of the thread, the hub's own work included), what a test asserts on a
loaded machine, where the wall clock also counts the time other processes had the cores.
"""

from __future__ import annotations

import gc
import time

import gevent
import greenlet


class HubBlockProbe:
    def __init__(self, interval: float = 0.001, trace: bool = False) -> None:
        self.interval = interval
        self.trace = trace
        self.longest_run: dict[str, float] = {}
        self.longest_cpu_run: dict[str, float] = {}  # the same runs in CPU time (module docstring)
        self._switched_at_cpu = 0.0
        self._main: greenlet.greenlet | None = None
        self._switched_at = 0.0
        self._previous_trace: object = None
        self.longest_gc: dict[int, float] = {}  # generation -> longest collection (s), with trace
        self._gc_started = 0.0
        self._gc_in_run = 0.0
        # the same runs without the garbage collector's pauses in them: the code's own share
        self.longest_run_without_gc: dict[str, float] = {}
        self.max_block = 0.0
        self.max_cpu_block = 0.0  # the same, in the thread's CPU time (module docstring)
        self.wakeups = 0
        self.max_by_phase: dict[str, float] = {}
        self._phase = ""
        self._seen: set[str] = set()
        self._greenlet: gevent.Greenlet | None = None
        self._sleep_started = time.perf_counter()

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, name: str) -> None:
        if self.trace and greenlet.getcurrent() is self._main:
            # a run of the main greenlet is split where the phase changes: the end of a scan
            # that did not yield is charged to the scan, not to the mount that follows
            self._charge(f"main:{self._phase}", time.perf_counter())
        self._phase = name
        self._seen.add(name)

    def _run(self) -> None:
        while True:
            self._seen = {self._phase}
            self._sleep_started = time.perf_counter()
            cpu_started = time.thread_time()
            gevent.sleep(self.interval)
            self.wakeups += 1
            self._record(time.perf_counter() - self._sleep_started - self.interval)
            self.max_cpu_block = max(self.max_cpu_block, time.thread_time() - cpu_started - self.interval)

    def _record(self, late: float) -> None:
        self.max_block = max(self.max_block, late)
        for name in self._seen:
            self.max_by_phase[name] = max(self.max_by_phase.get(name, 0.0), late)

    def _who(self, origin: greenlet.greenlet) -> str:
        if origin is self._main:
            return f"main:{self._phase}"
        if origin is gevent.get_hub():
            return "hub"
        if origin is self._greenlet:
            return "probe"
        run = getattr(origin, "_run", None)  # gevent.Greenlet: the function it runs
        name = getattr(run, "__qualname__", None) or type(origin).__name__
        if name == "Greenlet._run":  # a subclass or a wrapper: its repr names the function
            name = repr(origin).rsplit(": ", 1)[-1].split("(", 1)[0].rstrip(">")
        return f"greenlet:{name}"

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # the collector runs inside whatever greenlet allocated: its pause is part of that run
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            took = time.perf_counter() - self._gc_started
            self._gc_in_run += took
            generation = info["generation"]
            self.longest_gc[generation] = max(self.longest_gc.get(generation, 0.0), took)

    def _on_switch(self, event: str, args: tuple[greenlet.greenlet, greenlet.greenlet]) -> None:
        if event in ("switch", "throw"):
            self._charge(self._who(args[0]), time.perf_counter())

    def _charge(self, who: str, now: float) -> None:
        """The run that ends ``now`` (since the last switch or phase change) belongs to ``who``."""
        ran = now - self._switched_at
        own = ran - self._gc_in_run
        self._switched_at = now
        cpu_now = time.thread_time()
        cpu = cpu_now - self._switched_at_cpu
        self._switched_at_cpu = cpu_now
        if cpu > self.longest_cpu_run.get(who, 0.0):
            self.longest_cpu_run[who] = cpu
        self._gc_in_run = 0.0
        if ran > self.longest_run.get(who, 0.0):
            self.longest_run[who] = ran
        if own > self.longest_run_without_gc.get(who, 0.0):
            self.longest_run_without_gc[who] = own

    def __enter__(self) -> HubBlockProbe:
        if self.trace:
            self._main = greenlet.getcurrent()
            self._switched_at = time.perf_counter()
            self._switched_at_cpu = time.thread_time()
            self._previous_trace = greenlet.settrace(self._on_switch)
            gc.callbacks.append(self._on_gc)
        self._greenlet = gevent.spawn(self._run)
        gevent.sleep(0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._greenlet is not None:
            # a block still going on when the measured code returns never woke the probe: count it
            self._record(time.perf_counter() - self._sleep_started - self.interval)
            self._greenlet.kill()
        if self.trace:
            greenlet.settrace(self._previous_trace)
            gc.callbacks.remove(self._on_gc)

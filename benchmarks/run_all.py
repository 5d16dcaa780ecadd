"""Run every benchmark, collect the figures into ``report.json`` and a Markdown table ``report.md``.

Each benchmark script runs as its own subprocess (with ``--json``; ``service_benchmark.py``, which
has no ``--json``, through a small wrapper that captures its results), in its own process group so
that a timeout also ends what it started (beacon, service). The table lists each figure with its
target, the measured value and pass/fail; a script that failed is listed with its error and makes
the exit status 1 (a missed target does not: the numbers are for people to read).

``--quick``: small sizes (under a minute on a 2-core machine): a smoke test of the benchmarks, not
a measurement. The full run takes a few minutes.

Usage: .venv/bin/python benchmarks/run_all.py [--quick] [--out DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# service_benchmark.py prints its results but has no --json: run its main() with print_summary
# wrapped to also dump the results (argv: JSON file, then the script's own arguments).
SERVICE_WRAPPER = """
import json, sys
sys.path.insert(0, {here!r})
import service_benchmark as bench
out, argv = sys.argv[1], sys.argv[2:]
shown = bench.print_summary
def capture(results):
    shown(results)
    with open(out, "w") as f:
        json.dump({{"backends": {{r["backend"]: r for r in results}}}}, f, indent=2)
bench.print_summary = capture
sys.exit(bench.main(argv))
"""


@dataclass
class Figure:
    """One line of the report: where to find the value in the script's JSON and its target."""

    name: str
    path: str  # dotted keys into the script's JSON
    unit: str
    op: str | None = None  # "<", "<=", ">=", "==" or None (no target: informational)
    target: float | None = None
    note: str = ""

    def verdict(self, value: float) -> bool | None:
        if self.op is None or self.target is None:
            return None
        checks: dict[str, Callable[[float, float], bool]] = {
            "<": lambda v, t: v < t,
            "<=": lambda v, t: v <= t,
            ">=": lambda v, t: v >= t,
            "==": lambda v, t: v == t,
        }
        return checks[self.op](value, self.target)

    def target_text(self) -> str:
        if self.op is None or self.target is None:
            return ""
        return f"{self.op} {self.target:g} {self.unit}".strip()


@dataclass
class Benchmark:
    """A benchmark script, its arguments (quick and full) and the figures it reports."""

    name: str
    script: str
    quick_args: list[str]
    full_args: list[str]
    figures: list[Figure]
    note_quick: str = ""
    note_full: str = ""
    timeout_quick: float = 120.0
    timeout_full: float = 900.0
    wrapper: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


BENCHMARKS = [
    Benchmark(
        "provenance_soak",
        "provenance_soak.py",
        ["--seeds", "101", "--scans", "15"],
        ["--seeds", "101", "202", "303", "--scans", "340"],
        [
            Figure("provenance: scans checked", "scans", "scans"),
            Figure("provenance: scans under the ESRF policy", "policy_scans", "scans"),
            Figure(
                "provenance: WRONG + FALSE_EMPTY + UNFLAGGED + SILENT + MISMATCH + RAISED", "bad", "", "==", 0
            ),
            Figure("provenance: FLAGGED_DOUBT (explicit doubt, acceptable)", "counts.FLAGGED_DOUBT", "scans"),
        ],
        note_quick="one seed of 15 scans",
        note_full="3 seeds x 340 scans, a third under the ESRF data policy",
        timeout_quick=300.0,
        timeout_full=1500.0,
    ),
    Benchmark(
        "reader_latency",
        "reader_latency.py",
        ["--reads", "100", "--stale-reads", "20", "--baseline-s", "2"],
        ["--reads", "1000", "--stale-reads", "1000"],
        [
            Figure("reader push latency p99", "push_latency_p99_ms", "ms", "<", 1.0),
            Figure("reader triggered read p99", "read_roundtrip_p99_ms", "ms", "<", 1.0),
            Figure("reader: longest run on the hub, CPU time", "longest_cpu_run_ms", "ms", "<", 5.0),
            Figure("reader: longest hub block, wall clock (machine jitter in it)", "hub_max_block_ms", "ms"),
            Figure("reader stale-answer soak: stale codes", "stale_soak.stale_codes", "", "==", 0),
            Figure("reader stale-answer soak: wrong codes", "stale_soak.wrong_codes", "", "==", 0),
            Figure("reader stale-answer soak: headers as codes", "stale_soak.header_codes", "", "==", 0),
            Figure(
                "reader stale-answer soak: driver's longest run, CPU time",
                "stale_soak.driver_longest_cpu_run_ms",
                "ms",
                "<",
                5.0,
            ),
            Figure(
                "reader stale-answer soak: driver's longest run, wall",
                "stale_soak.driver_longest_run_ms",
                "ms",
            ),
            Figure(
                "idle process hub block (this machine's jitter)",
                "stale_soak.idle_baseline_hub_block_ms",
                "ms",
            ),
        ],
        note_quick="100 reads; soak 20 reads per family",
        note_full="1,000 reads; soak 1,000 reads per family (6 families and framings)",
    ),
    Benchmark(
        "tagging_overhead",
        "tagging_overhead.py",
        ["--writer", "nexus", "--scans", "5", "--points", "5"],
        ["--writer", "nexus", "--scans", "50", "--points", "10"],
        [
            Figure(
                "tagging (NexusWriter, production): loopscan(N, 0) time ratio on/off",
                "count_time_0.ratio",
                "",
                "<=",
                1.02,
                "no counting time: the worst case; files written by blisswriter's external writer",
            ),
            Figure(
                "tagging (NexusWriter, production): loopscan(N, 0.1) time ratio on/off",
                "count_time_0.1.ratio",
                "",
                "<=",
                1.02,
            ),
            Figure("tagging: tag callable", "tag_callable_us", "us"),
        ],
    ),
    Benchmark(
        "tagging_overhead_hdf5",
        "tagging_overhead.py",
        ["--writer", "hdf5", "--scans", "5", "--points", "5"],
        ["--writer", "hdf5", "--scans", "50", "--points", "10"],
        [
            Figure(
                "tagging (in-process hdf5 writer): loopscan(N, 0) time ratio on/off",
                "count_time_0.ratio",
                "",
                note="for comparison: BLISS writes the NXsample group in the scan's own process",
            ),
            Figure(
                "tagging (in-process hdf5 writer): loopscan(N, 0.1) time ratio on/off",
                "count_time_0.1.ratio",
                "",
            ),
        ],
    ),
    Benchmark(
        "delivery_drain",
        "delivery_drain.py",
        ["--events", "500"],
        ["--events", "10000"],
        [
            Figure("outbox drain, batches of 200", "batch_per_s", "events/s", ">=", 5000.0),
            Figure("outbox drain, one per request", "single_per_s", "events/s"),
        ],
    ),
    Benchmark(
        "delivery_recovery",
        "delivery_recovery.py",
        ["--quick"],
        [],
        [
            Figure(
                "delivery: recovery after a service outage, median",
                "recovery_after_outage_s.median",
                "s",
                "<=",
                1.0,
                "service answering again -> last event queued during the outage stored (its received_at)",
            ),
            Figure(
                "delivery: recovery after a service outage, max",
                "recovery_after_outage_s.max",
                "s",
                "<=",
                1.0,
            ),
            Figure(
                "delivery: takeover after kill -9 of the delivering process, median",
                "takeover_after_kill_s.median",
                "s",
                "<=",
                2.0,
                "kill -> first event queued after it stored, sent by the standby `sampletrack deliver`",
            ),
            Figure(
                "delivery: takeover after kill -9 of the delivering process, max",
                "takeover_after_kill_s.max",
                "s",
                "<=",
                2.0,
            ),
            Figure(
                "delivery: only deliverer killed, new process to first send, median",
                "restart_to_first_send_s.median",
                "s",
                note="includes the new process' Python/BLISS imports and the dead holder's lease",
            ),
            Figure(
                "delivery recovery: events missing, duplicated or out of order",
                "delivery_check.bad",
                "",
                "==",
                0,
            ),
        ],
        note_quick="2 outages of 2-4 s, 2 kills, 1 restart",
        note_full="5 outages of 10-30 s, 5 kills, 3 restarts",
        timeout_quick=300.0,
        timeout_full=900.0,
    ),
    Benchmark(
        "service_benchmark",
        "service_benchmark.py",
        ["--quick", "--events", "10000", "--backend", "sqlite"],
        ["--events", "200000", "--backend", "both"],
        [
            Figure(
                "service (SQLite) batch ingest", "backends.sqlite.batch_events_per_s", "events/s", ">=", 5000
            ),
            Figure("service (SQLite) single POST /events", "backends.sqlite.single_events_per_s", "events/s"),
            Figure("service (SQLite) mounted-now p99", "backends.sqlite.mounted_p99_ms", "ms", "<=", 10.0),
            Figure("service (SQLite) sample history p99", "backends.sqlite.history_p99_ms", "ms", "<=", 10.0),
        ],
        note_quick="10,000 stored events, SQLite only",
        note_full="200,000 stored events, not the issue's 1 M (run the script alone for it)",
        wrapper=SERVICE_WRAPPER,
        extra={
            "full_figures": [
                Figure(
                    "service (PostgreSQL) batch ingest",
                    "backends.postgresql.batch_events_per_s",
                    "events/s",
                    ">=",
                    5000,
                ),
                Figure(
                    "service (PostgreSQL) mounted-now p99",
                    "backends.postgresql.mounted_p99_ms",
                    "ms",
                    "<=",
                    10,
                ),
                Figure(
                    "service (PostgreSQL) history p99", "backends.postgresql.history_p99_ms", "ms", "<=", 10
                ),
            ]
        },
    ),
    Benchmark(
        "hub_block_cycles",
        "hub_block_cycles.py",
        ["--quick", "--writer", "nexus"],
        ["--writer", "nexus"],
        [
            Figure(
                "hub block, mount + loopscan(1, 0) + unmount cycles",
                "hub_max_block_scan_cycles_ms",
                "ms",
                "<",
                5.0,
                "includes BLISS's own scan machinery",
            ),
            Figure(
                "hub block in those cycles, charged to the tracker's calls",
                "hub_max_block_tracker_calls_ms",
                "ms",
                note="any greenlet's block while a mount/unmount call was running",
            ),
            Figure(
                "longest run of the tracker's own code in those cycles",
                "longest_run_tracker_code_ms",
                "ms",
                "<",
                5.0,
                "the main greenlet inside mount/unmount without yielding (greenlet.settrace)",
            ),
            Figure(
                "hub block, loopscan(1, 0) with the tracker off",
                "hub_max_block_scans_without_tracker_ms",
                "ms",
                note="BLISS alone (N/10 scans): its in-process HDF5 writer",
            ),
            Figure("longest garbage collection (gen 2)", "longest_gc_ms.2", "ms", note="BLISS's heap"),
            Figure("hub block, mount + unmount cycles only", "hub_max_block_mount_only_ms", "ms", "<", 5.0),
            Figure("mount + unmount cycle time", "mount_unmount_cycle_ms", "ms"),
            Figure("tracker RSS growth over mount/unmount cycles", "rss_growth_mb", "MB", "<", 5.0),
        ],
        note_quick="50 scan cycles, 500 mount cycles",
        note_full="1,000 scan cycles, 10,000 mount cycles",
    ),
    Benchmark(
        "inventory_cost",
        "inventory_cost.py",
        ["--quick"],
        [],
        [
            Figure(
                "inventory: longest run of any greenlet, CPU (pin_read_time 0)",
                "instant.longest_cpu_run_ms",
                "ms",
                "<",
                50.0,
                "the hub's longest block in CPU time (the wall clock counts the VM's pauses)",
            ),
            Figure(
                "inventory: longest run of any greenlet, CPU (pin_read_time 0.05 s)",
                "realistic.longest_cpu_run_ms",
                "ms",
                "<",
                50.0,
            ),
            Figure(
                "inventory + loopscan(10, 0.05): longest run of any greenlet, CPU",
                "with_scan.longest_cpu_run_ms",
                "ms",
                "<",
                50.0,
                "BLISS's scan greenlet included",
            ),
            Figure(
                "inventory: longest hub block, wall clock (worst of the 3)",
                "worst_hub_max_block_ms",
                "ms",
                note="machine jitter in it",
            ),
            Figure("inventory: progress updates missing or out of order", "progress_errors", "", "==", 0),
            Figure("inventory: progress updates (pin_read_time 0.05 s)", "realistic.progress_updates", ""),
            Figure("inventory: total time (pin_read_time 0)", "instant.total_s", "s"),
            Figure("inventory: total time (pin_read_time 0.05 s)", "realistic.total_s", "s"),
            Figure("inventory: CPU time (pin_read_time 0.05 s)", "realistic.cpu_s", "s"),
            Figure("inventory: per pin, mean (pin_read_time 0.05 s)", "realistic.per_pin_mean_ms", "ms"),
            Figure("inventory: per pin, max (pin_read_time 0.05 s)", "realistic.per_pin_max_ms", "ms"),
            Figure(
                "inventory: 10 ms ticker's turns / expected (pin_read_time 0.05 s)",
                "realistic.ticks_ratio",
                "",
                note="an idle session reaches about 0.96",
            ),
            Figure("inventory: concurrent loopscan completed", "with_scan.scan_completed", "", "==", 1),
            Figure("inventory: concurrent loopscan time / alone", "with_scan.scan_ratio_vs_alone", "x"),
        ],
        note_quick="2 pucks x 16 pins",
        note_full="10 pucks x 16 pins",
    ),
    Benchmark(
        "delivery_vs_icatplus",
        "delivery_vs_icatplus.py",
        ["--quick"],
        [],
        [
            Figure("ours batched / pyicat-plus send_message rate", "ratio_batch_vs_icatplus", "x"),
            Figure("ours one per request / pyicat-plus rate", "ratio_single_vs_icatplus", "x"),
            Figure("ours batched, events lost (server drops 1 in 5)", "ours_batch_drop_lost", "", "==", 0),
            Figure("ours one per request, events lost (drops 1 in 5)", "ours_single_drop_lost", "", "==", 0),
            Figure("pyicat-plus send_message, events lost (drops 1 in 5)", "icatplus_drop_lost", ""),
        ],
        note_quick="300 events per run",
        note_full="2,000 events per run",
    ),
    Benchmark(
        "growth",
        "growth.py",
        ["--quick"],
        [],
        [
            Figure(
                "service batch ingest at 100x stored events",
                "stored_events.100x.batch_events_per_s",
                "events/s",
                ">=",
                5000,
            ),
            Figure(
                "service mounted-now p99 at 100x stored events",
                "stored_events.100x.mounted_p99_ms",
                "ms",
                "<=",
                10,
            ),
            Figure(
                "service history p99 at 100x stored events",
                "stored_events.100x.history_p99_ms",
                "ms",
                "<=",
                10,
            ),
        ],
        note_quick="100 / 1,000 / 10,000 stored events; backlogs 10 / 100 / 1,000",
        note_full="10,000 / 100,000 / 1,000,000 stored events (SQLite); backlogs 1,000 / 10,000 / 100,000",
    ),
    Benchmark(
        "service_scale",
        "service_scale.py",
        ["--quick"],
        [],
        [
            Figure("service farm (PostgreSQL): ingest, 1 process", "runs.1.events_per_s", "events/s"),
            Figure("service farm (PostgreSQL): ingest, 2 processes", "runs.2.events_per_s", "events/s"),
            Figure("service farm (PostgreSQL): ingest, 4 processes", "runs.4.events_per_s", "events/s"),
            Figure(
                "service farm: ingest ratio 4 / 1 processes",
                "ratio_4_1",
                "x",
                note="clients, services and PostgreSQL share this machine's CPUs",
            ),
            Figure("service farm: CPUs busy, 4 processes", "runs.4.machine_busy", "", note="1 = every CPU"),
            Figure("service farm: busiest client process, 4 processes", "runs.4.client_busiest", ""),
            Figure("service farm: events lost", "lost", "", "==", 0),
            Figure("service farm: events stored twice", "duplicates", "", "==", 0),
            Figure("service farm: per-beamline order inversions", "order_inversions", "", "==", 0),
            Figure(
                "service farm: mounted-now p99 during ingest (worst N)",
                "worst_mounted_p99_ms",
                "ms",
                note="20 outboxes catching up at once on 2 CPUs: GETs wait behind batch POSTs",
            ),
            Figure("service farm: history p99 during ingest (worst N)", "worst_history_p99_ms", "ms"),
        ],
        note_quick="10,000 events, 20 beamlines, N = 1, 2, 4",
        note_full="100,000 events, 20 beamlines (outbox backlogs drained at once), N = 1, 2, 4",
        timeout_quick=240.0,
        timeout_full=1200.0,
    ),
]

SCALES = ("1x", "10x", "100x")


@dataclass
class Growth:
    """One line of the growth table: a figure at 1x, 10x and 100x the work."""

    name: str
    benchmark: str
    path: str  # dotted keys, ``{scale}`` replaced by 1x, 10x, 100x
    unit: str
    work: str  # what grows, and its sizes (full run)


GROWTH = [
    Growth(
        "service batch ingest",
        "growth",
        "stored_events.{scale}.batch_events_per_s",
        "events/s",
        "stored events 10k / 100k / 1M",
    ),
    Growth(
        "service mounted-now p99",
        "growth",
        "stored_events.{scale}.mounted_p99_ms",
        "ms",
        "stored events 10k / 100k / 1M",
    ),
    Growth(
        "service history p99 (random sample)",
        "growth",
        "stored_events.{scale}.history_p99_ms",
        "ms",
        "stored events 10k / 100k / 1M",
    ),
    Growth(
        "one sample's history p50",
        "growth",
        "stored_events.{scale}.one_sample_history_p50_ms",
        "ms",
        "its history: 10 / 100 / 1,000 events",
    ),
    Growth(
        "outbox drain (batches of 200)",
        "growth",
        "backlog.{scale}.drain_events_per_s",
        "events/s",
        "backlog 1k / 10k / 100k events",
    ),
    Growth(
        "mount + loopscan(1, 0) + unmount cycle",
        "hub_block_cycles",
        "growth_scan_cycle_ms.{scale}",
        "ms",
        "after 10 / 100 / 1,000 cycles",
    ),
    Growth(
        "mount + unmount cycle",
        "hub_block_cycles",
        "growth_mount_cycle_ms.{scale}",
        "ms",
        "after 100 / 1,000 / 10,000 cycles (history capped at 1,000, outbox backlog grows)",
    ),
]


def lookup(data: Any, path: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``; keys may hold dots (``count_time_0.1``): longest match first."""
    if path in data:
        return data[path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if isinstance(data, dict) and head in data:
            return lookup(data[head], ".".join(parts[cut:]))
    raise KeyError(path)


def run_script(bench: Benchmark, quick: bool, out: Path) -> dict[str, Any]:
    """Run one benchmark script; its output goes to ``out/NAME.log`` and to this stdout."""
    json_path = out / f"{bench.name}.json"
    json_path.unlink(missing_ok=True)
    args = bench.quick_args if quick else bench.full_args
    script = str(HERE / bench.script)
    if bench.wrapper is not None:
        cmd = [sys.executable, "-c", bench.wrapper.format(here=str(HERE)), str(json_path), *args]
    else:
        cmd = [sys.executable, script, *args, "--json", str(json_path)]
    timeout = bench.timeout_quick if quick else bench.timeout_full
    print(f"\n### {bench.name}: {bench.script} {' '.join(args)}", flush=True)
    started = time.monotonic()
    timed_out = threading.Event()
    with (out / f"{bench.name}.log").open("w") as log:
        process = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: killed whole on timeout
        )

        def kill() -> None:
            timed_out.set()
            os.killpg(process.pid, signal.SIGTERM)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                if "\r" not in line:  # BLISS's progress lines
                    sys.stdout.write("    " + line)
            returncode = process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    elapsed = time.monotonic() - started
    result: dict[str, Any] = {
        "script": bench.script,
        "args": args,
        "seconds": round(elapsed, 1),
        "returncode": returncode,
    }
    if timed_out.is_set():
        result["error"] = f"timed out after {timeout:g} s"
    elif returncode != 0:
        result["error"] = f"exit status {returncode} (see {bench.name}.log)"
    elif not json_path.exists():
        result["error"] = "no JSON written"
    else:
        result["raw"] = json.loads(json_path.read_text())
    return result


def collect(bench: Benchmark, result: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    """The report's figures of one benchmark (each with its value, or None and an error)."""
    figures = list(bench.figures)
    if not quick:
        figures += bench.extra.get("full_figures", [])
    note = bench.note_quick if quick else bench.note_full
    rows = []
    for index, figure in enumerate(figures):
        value: float | None = None
        error = result.get("error")
        if error is None:
            try:
                value = float(lookup(result["raw"], figure.path))
            except (KeyError, TypeError, ValueError):
                error = f"{figure.path} missing from the script's JSON"
        rows.append(
            {
                "benchmark": bench.name,
                "figure": figure.name,
                "value": value,
                "unit": figure.unit,
                "target": figure.target_text(),
                "passed": None if value is None else figure.verdict(value),
                "note": "; ".join(x for x in (figure.note, "" if index else note, error or "") if x),
            }
        )
    return rows


def growth_rows(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The growth table: each series at 1x, 10x, 100x and the ratio 100x / 1x."""
    rows = []
    for growth in GROWTH:
        run = runs.get(growth.benchmark)
        if run is None:
            continue
        values: list[float | None] = []
        for scale in SCALES:
            try:
                values.append(float(lookup(run["raw"], growth.path.format(scale=scale))))
            except (KeyError, TypeError, ValueError):
                values.append(None)
        first, last = values[0], values[-1]
        rows.append(
            {
                "figure": growth.name,
                "work": growth.work,
                "unit": growth.unit,
                "values": dict(zip(SCALES, values, strict=True)),
                "ratio_100x_1x": last / first if first and last is not None else None,
            }
        )
    return rows


def shown(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if value else "0"
    return f"{text} {unit}".strip()


def markdown(report: dict[str, Any]) -> str:
    mode = "quick (smoke test, noisy numbers)" if report["quick"] else "full"
    lines = [
        f"# Benchmarks ({mode})",
        "",
        f"{report['host']['cpus']} CPUs, Python {report['host']['python']}, {report['started']}, "
        f"{report['seconds']:.0f} s in all.",
        "",
        "| figure | target | measured | result | note |",
        "|---|---|---|---|---|",
    ]
    for row in report["figures"]:
        result = {True: "pass", False: "FAIL", None: "-"}[row["passed"]]
        if row["value"] is None:
            result = "ERROR"
        lines.append(
            f"| {row['figure']} | {row['target']} | {shown(row['value'], row['unit'])} | {result} "
            f"| {row['note']} |"
        )
    if report.get("growth"):
        lines += [
            "",
            "Growth (sizes of the full run; `--quick` divides them by 100):",
            "",
            "| figure | grows with | 1x | 10x | 100x | 100x / 1x |",
            "|---|---|---|---|---|---|",
        ]
        for row in report["growth"]:
            values = " | ".join(shown(v, row["unit"]) for v in row["values"].values())
            ratio = "n/a" if row["ratio_100x_1x"] is None else f"{row['ratio_100x_1x']:.2f}"
            lines.append(f"| {row['figure']} | {row['work']} | {values} | {ratio} |")
    lines += ["", "| benchmark | arguments | seconds | status |", "|---|---|---|---|"]
    for name, run in report["runs"].items():
        status = run.get("error", "ok")
        arguments = f"`{' '.join(run['args'])}`" if run["args"] else "(defaults)"
        lines.append(f"| {name} | {arguments} | {run['seconds']} | {status} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test under a minute")
    parser.add_argument("--out", type=Path, help="report folder (default: a new temporary folder)")
    parser.add_argument(
        "--only", nargs="+", choices=[b.name for b in BENCHMARKS], help="run only these benchmarks"
    )
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="sampletrack-report-"))
    out.mkdir(parents=True, exist_ok=True)
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]

    started = time.monotonic()
    report: dict[str, Any] = {
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "runs": {},
        "figures": [],
    }
    for bench in chosen:
        result = run_script(bench, args.quick, out)
        report["runs"][bench.name] = result
        report["figures"] += collect(bench, result, args.quick)
    report["growth"] = growth_rows(report["runs"])
    report["seconds"] = round(time.monotonic() - started, 1)

    (out / "report.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (out / "report.md").write_text(table)
    print("\n" + table)
    print(f"report: {out / 'report.json'}, {out / 'report.md'}")
    return 1 if any("error" in run for run in report["runs"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())

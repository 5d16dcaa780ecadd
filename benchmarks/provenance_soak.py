#!/usr/bin/env python
"""The provenance soak's long run: several seeds of ``tools/provenance.py``, the counts added up.

    .venv/bin/python benchmarks/provenance_soak.py [--seeds 101 202 303] [--scans 340]
                                                   [--policy-fraction 0.34] [--json FILE]

Each seed runs in a process of its own (its own beacon and BLISS session, as the tool does) and
writes its JSON report; this script prints one line per seed and the totals, and writes them
with ``--json``. Targets (issue 16): WRONG, FALSE_EMPTY, UNFLAGGED_CHANGE, SILENT, MISMATCH and
RAISED all 0 over at least 1,000 scans, a third of them under the ESRF data policy; FLAGGED_DOUBT
is counted (UNKNOWN/CONFLICT with a reason: acceptable) with its reasons.
Exit status 0 whatever the counts (they are the figures; ``run_all.py`` judges them), 2 when a
seed could not run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BAD = ("WRONG", "FALSE_EMPTY", "UNFLAGGED_CHANGE", "SILENT", "MISMATCH", "RAISED")


def run_seed(seed: int, scans: int, fraction: float, folder: Path) -> dict[str, Any]:
    report = folder / f"seed{seed}.json"
    cmd = [
        sys.executable,
        str(REPO / "tools" / "provenance.py"),
        "--seed",
        str(seed),
        "--scans",
        str(scans),
        "--policy-fraction",
        str(fraction),
        "--json",
        str(report),
        "--workdir",
        str(folder / f"seed{seed}"),
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if done.returncode not in (0, 1) or not report.exists():
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"provenance soak seed {seed} could not run (exit status {done.returncode})")
    return json.loads(report.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 202, 303])
    parser.add_argument("--scans", type=int, default=340, help="scans per seed")
    parser.add_argument("--policy-fraction", type=float, default=0.34)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    totals: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    policy_scans = 0
    started = time.monotonic()
    seeds = []
    with tempfile.TemporaryDirectory(prefix="provenance-") as tmp:
        for seed in args.seeds:
            result = run_seed(seed, args.scans, args.policy_fraction, Path(tmp))
            counts = result["counts"]
            totals.update(counts)
            reasons.update(result.get("doubt_reasons", {}))
            under_policy = result["by_policy"].get("policy", {}).get("scans", 0)
            policy_scans += under_policy
            seeds.append(
                {"seed": seed, "counts": counts, "policy_scans": under_policy, "s": result["elapsed_s"]}
            )
            bad = ", ".join(f"{k} {counts.get(k, 0)}" for k in BAD)
            print(
                f"seed {seed}: {args.scans} scans ({under_policy} under the ESRF policy) in "
                f"{result['elapsed_s']:.0f} s: OK {counts.get('OK', 0)}, FLAGGED_DOUBT "
                f"{counts.get('FLAGGED_DOUBT', 0)}; {bad}",
                flush=True,
            )
    scans = args.scans * len(args.seeds)
    summary: dict[str, Any] = {
        "scans": scans,
        "policy_scans": policy_scans,
        "seeds": seeds,
        "counts": dict(totals),
        "bad": sum(totals.get(k, 0) for k in BAD),
        "doubt_reasons": dict(reasons.most_common(10)),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(
        f"total: {scans} scans ({policy_scans} under the ESRF policy): "
        + ", ".join(f"{k} {totals.get(k, 0)}" for k in ("OK", "FLAGGED_DOUBT", *BAD))
    )
    for reason, count in reasons.most_common(5):
        print(f"  doubt {count:4d}  {reason}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

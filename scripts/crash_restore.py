#!/usr/bin/env python3
"""Crash torture for the mirror: N trials of write, SIGKILL everything, wipe local, restore.

Each trial starts the stack on the same root folder (restoring what the previous trial left),
keeps Metaflow's per-task write sequence going, SIGKILLs every process at a random instant (every
other trial: the moment a temporary file appears in the root folder, i.e. mid-ship), deletes the
local folder (a new machine), restores, starts Postgres, runs pg_amcheck and counts acknowledged
runs that are missing. Prints trials, failed restores and the loss windows.

The stack is `ComponentStack` (Postgres + a mirror process, driven directly). To run the trials
against the real `mfcolab up`, give run_trial a stack class with the same five methods
(up, dsn, kill_all, check_database, stop) that shells out to `mfcolab up/down` and kills the
supervisor's process group.

    python scripts/crash_restore.py --trials 50
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import make_settings  # noqa: E402
from mirror_helpers import links_in, run_trial, summary  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--interval", type=float, default=5.0, help="snapshot interval (default: the product default)")
    parser.add_argument("--min-run", type=float, default=2.0, help="shortest run before the kill, seconds")
    parser.add_argument("--max-run", type=float, default=15.0, help="longest run before the kill, seconds")
    parser.add_argument("--workdir", type=Path, default=None, help="keep root/local here (default: a temp folder, removed)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mfcolab-crash-"))
    settings = make_settings(workdir, snapshot_interval=args.interval)
    rng = random.Random(args.seed)
    results = []
    print(f"seed {args.seed}, {args.trials} trials, snapshot interval {args.interval} s, folders under {workdir}", flush=True)
    try:
        for trial in range(args.trials):
            result = run_trial(settings, trial, rng, mid_ship=trial % 2 == 1, run_seconds=(args.min_run, args.max_run))
            results.append(result)
            status = "ok" if result.restored and not result.missing_before_shipped_end else "FAILED"
            print(f"trial {trial:3d} {status:6s} mid-ship={result.mid_ship!s:5s} acked={result.acked:5d} "
                  f"missing={result.missing:4d} loss window={result.loss_window:5.2f} s {result.error}", flush=True)
    finally:
        report = summary(results)
        report["links_in_root"] = len(links_in(settings.root))
        print(json.dumps(report, indent=1))
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report["failed_restores"] == 0 and report["lost_shipped_writes"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

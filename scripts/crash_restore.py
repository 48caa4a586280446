#!/usr/bin/env python3
"""Crash torture of the real stack: N trials of write, SIGKILL everything, wipe local, `mfcolab up`.

All trials share one root folder (as a user's Drive does); each trial is a new runtime:

1. the stack is up (`mfcolab up`: the first trial on an empty root, every later one restored by
   the previous trial);
2. a client keeps Metaflow's per-task write sequence going through the front door with the access
   key (create a run, its step and task, post metadata and artifacts, heartbeat) and records each
   run the service acknowledged, with the time the last answer arrived;
3. trials take turns at when to kill: at a random instant; the moment the mirror has a temporary
   file in the root folder (mid-ship); while a base backup runs (mid-base, asked for with
   `mfcolab snapshot`); up to 2 s after a `mfcolab snapshot` finished (after-snapshot: every run
   acknowledged before it must survive). Every process of the stack is SIGKILLed: the supervisor,
   Postgres and all its children, the web process, the mirror's rsync and pg_basebackup and
   anything else they started, by process group and by descendant, frozen first with SIGSTOP so
   they all die at the same instant;
4. the local folder is deleted (a new runtime) and `mfcolab up` runs again: it restores;
5. checks: pg_amcheck (every database, heap and indexes) finds nothing; the service's HTTP API
   reads every run of every earlier trial that survived, and every acknowledged run of this trial
   is either complete (task, metadata, artifacts) or among the newest ones (what was lost is a
   suffix, never a hole); the Client API, in a fresh process, reads the same runs.

Prints one line per trial, then: trials, failed restores, largest and median data-loss window
(seconds between the kill and the oldest acknowledged run that is missing; 0 when nothing is
missing). Exit code 0 when no restore failed and no loss window exceeds --max-window.

    python scripts/crash_restore.py --trials 50
    python scripts/crash_restore.py --components --trials 50   # Postgres + mirror driven directly
    python scripts/crash_restore.py --components --routine-bases --trials 50   # ... a new base always uploading
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

# The trial code is test code: tests/ is on the test venv's path (scripts/setup --test).
from crashtrials.components import run_trial as component_trial
from crashtrials.components import summary as component_summary
from crashtrials.realstack import LOSS_TARGET_SECONDS, TrialResult, format_trial, run_trials, summary
from helpers import make_settings
from mirror_helpers import links_in


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--min-run", type=float, default=1.0, help="shortest time of writes before the kill, seconds")
    parser.add_argument("--max-run", type=float, default=15.0, help="longest time of writes before the kill, seconds")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between two runs of the client (0: flat out)")
    parser.add_argument("--max-window", type=float, default=LOSS_TARGET_SECONDS, help="largest acceptable loss window")
    parser.add_argument("--snapshot-interval", type=float, default=None, help="passed to mfcolab up (default: the product's)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep root/local here (default: a temp folder, removed)")
    parser.add_argument("--components", action="store_true",
                        help="drive Postgres and a mirror process directly instead of `mfcolab up`")
    parser.add_argument("--routine-bases", action="store_true",
                        help="with --components: the mirror uploads a new base beside its cycles all the time")
    args = parser.parse_args()
    if args.components:
        return _component_trials(args)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mfcolab-crash-"))
    extra = [] if args.snapshot_interval is None else ["--snapshot-interval", str(args.snapshot_interval)]
    print(f"seed {args.seed}, {args.trials} trials on the real stack, writes for {args.min_run}-{args.max_run} s, "
          f"folders under {workdir}", flush=True)
    results: list[TrialResult] = []
    try:
        run_trials(workdir, args.trials, args.seed, (args.min_run, args.max_run), extra, args.pause,
                   report=lambda r: (results.append(r), print(format_trial(r), flush=True)))
    finally:
        report = summary(results)
        report["links_in_root"] = len(links_in(workdir / "root"))
        print(json.dumps(report, indent=1), flush=True)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    too_long = [r for r in results if r.restored and r.loss_window > args.max_window]
    return 0 if results and report["failed_restores"] == 0 and not too_long and report["links_in_root"] == 0 else 1


def _component_trials(args: argparse.Namespace) -> int:
    """The earlier, component-level torture: Postgres and a mirror process without the supervisor."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mfcolab-crash-"))
    settings = make_settings(workdir, snapshot_interval=args.snapshot_interval or 5.0)
    rng = random.Random(args.seed)
    results = []
    try:
        for trial in range(args.trials):
            result = component_trial(settings, trial, rng, mid_ship=trial % 2 == 1, run_seconds=(args.min_run, args.max_run),
                                     routine_bases=args.routine_bases)
            results.append(result)
            print(f"trial {trial:3d} {'ok' if result.restored else 'FAILED'} mid-ship={result.mid_ship} acked={result.acked} "
                  f"missing={result.missing} loss window={result.loss_window:.2f} s {result.error}", flush=True)
    finally:
        report = component_summary(results)
        report["links_in_root"] = len(links_in(settings.root))
        print(json.dumps(report, indent=1))
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report["failed_restores"] == 0 and report["lost_shipped_writes"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

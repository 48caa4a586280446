"""Crash torture of the real stack: write, SIGKILL every process of the stack, wipe the local
folder, `mfcolab up` again, check. scripts/crash_restore.py describes a trial step by step and
runs many; tests/test_crash_restore.py runs a few.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import free_port, wait_until
from mfcolab.postgres import DB_USER, run_pg_tool
from mfcolab.replica import layout
from mfcolab.settings import Settings
from mfcolab.supervisor.process import descendants, find_processes, pid_alive
from stack_helpers import Stack

KILL_MOMENTS = ("random", "mid-ship", "mid-base", "after-snapshot")
LOSS_TARGET_SECONDS = 10.0
SYSTEM_TAGS = ["metaflow_version:2.19.39", "user:crash", "python_version:3.11", "runtime:dev"]


# --- the client: Metaflow's per-task write sequence through the front door --------------------------

@dataclasses.dataclass
class Ack:
    run: int
    task: int
    at: float  # wall clock when the last answer of the run arrived


class Writer(threading.Thread):
    """One client writing runs one after another until stopped or the service goes away."""

    def __init__(self, port: int, key: str, flow: str, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.port, self.key, self.flow, self.pause = port, key, flow, pause
        self.acks: list[Ack] = []
        self.stopping = threading.Event()
        self.error = ""

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            self._post(conn, f"/flows/{self.flow}", {"user_name": "crash", "tags": [], "system_tags": SYSTEM_TAGS})
            while not self.stopping.is_set():
                self.acks.append(self._write_run(conn))
                self.stopping.wait(self.pause)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()

    def _post(self, conn: http.client.HTTPConnection, path: str, body: Any, ok: tuple[int, ...] = (200,)) -> Any:
        conn.request("POST", "/metadata" + path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", "x-api-key": self.key})
        response = conn.getresponse()
        data = response.read()
        if response.status not in ok:
            raise ValueError(f"POST {path} answered {response.status}: {data[:200]!r}")
        return json.loads(data) if data else None

    def _write_run(self, conn: http.client.HTTPConnection) -> Ack:
        flow = self.flow
        common = {"user_name": "crash", "tags": [], "system_tags": SYSTEM_TAGS}
        run = int(self._post(conn, f"/flows/{flow}/run", common)["run_number"])
        run_path = f"/flows/{flow}/runs/{run}"
        self._post(conn, f"{run_path}/steps/start/step", common)
        task = int(self._post(conn, f"{run_path}/steps/start/task", common)["task_id"])
        task_path = f"{run_path}/steps/start/tasks/{task}"
        base = {"flow_id": flow, "run_number": str(run), "step_name": "start", "task_id": str(task), "user_name": "crash"}
        self._post(conn, f"{task_path}/metadata", [
            {**base, "field_name": name, "value": value, "type": name, "tags": ["attempt_id:0"], "system_tags": []}
            for name, value in (("attempt", "0"), ("ds-type", "local"), ("attempt_ok", "True"))
        ])
        self._post(conn, f"{task_path}/artifact", [
            {**base, "attempt_id": 0, "name": name, "content_type": "gzip+pickle-v4", "type": "metaflow.artifact",
             "sha": uuid.uuid4().hex, "ds_type": "local", "location": f"/ds/{flow}/{run}/{name}", "tags": [], "system_tags": []}
            for name in ("name", "x", "values")
        ])
        # 404 is the service's "too soon, not recorded" answer to a heartbeat
        self._post(conn, f"{task_path}/heartbeat", {}, ok=(200, 404))
        self._post(conn, f"{run_path}/heartbeat", {}, ok=(200, 404))
        return Ack(run, task, time.time())


class Reader:
    """The service's HTTP API through the front door, on one keep-alive connection."""

    def __init__(self, port: int, key: str) -> None:
        self.key = key
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> Any:
        self.conn.request("GET", "/metadata" + path, headers={"x-api-key": self.key})
        response = self.conn.getresponse()
        data = response.read()
        if response.status == 404:
            return None
        if response.status != 200:
            raise AssertionError(f"GET {path} answered {response.status}: {data[:300]!r}")
        return json.loads(data)

    def close(self) -> None:
        self.conn.close()

    def runs(self, flow: str) -> set[int]:
        return {int(r["run_number"]) for r in self.get(f"/flows/{flow}/runs") or []}

    def complete(self, flow: str, ack: Ack) -> bool:
        """The run's task with its metadata and all three artifacts."""
        task_path = f"/flows/{flow}/runs/{ack.run}/steps/start/tasks/{ack.task}"
        artifacts = self.get(f"{task_path}/artifacts") or []
        metadata = self.get(f"{task_path}/metadata") or []
        return ({a["name"] for a in artifacts} == {"name", "x", "values"}
                and {m["field_name"] for m in metadata} >= {"attempt", "ds-type", "attempt_ok"})


# --- killing the stack -----------------------------------------------------------------------------

def _tree(roots: set[int]) -> set[int]:
    """The live roots and everything below them."""
    return {p for p in roots if pid_alive(p)} | descendants(roots)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def stack_processes(stack: Stack) -> set[int]:
    """The supervisor and the components `mfcolab status --json` names."""
    status = stack.status()
    pids = {status["supervisor_pid"]}
    pids.update(c["pid"] for c in status.get("components", []) if c.get("pid"))
    return {p for p in pids if p}


def kill_everything(pids: set[int]) -> set[str]:
    """SIGSTOP every process group of the stack (and every descendant), then SIGKILL them: the
    whole stack dies at one instant. Returns the names of the processes that were hit."""
    targets = _tree(pids)
    groups = {g for g in (_pgid(p) for p in targets) if g is not None and g != os.getpgrp()}
    names: set[str] = set()
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for group in groups:
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass
        for pid in targets:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGSTOP:
            names = _names(_tree(pids) | targets)  # all frozen: what was running at the kill
    wait_until(lambda: not any(pid_alive(p) for p in targets), timeout=30, interval=0.02,
               what="every SIGKILLed process to exit")
    return names


def _names(pids: set[int]) -> set[str]:
    names = set()
    for pid in pids:
        try:
            names.add(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return names


def processes_using(folder: Path) -> list[int]:
    """Live processes whose command line or environment names `folder`."""
    needle = str(folder).encode()
    return find_processes(lambda cmdline, environ: needle in cmdline or needle in environ)


# --- when to kill -----------------------------------------------------------------------------------

def _temp_file_in(folder: Path) -> bool:
    for _parent, _dirs, files in os.walk(folder):
        if any(layout.is_temp(name) for name in files):
            return True
    return False


def _basebackup_running(pids: set[int]) -> bool:
    for pid in _tree(pids):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "pg_basebackup":
                return True
        except OSError:
            continue
    return False


def wait_for_kill_moment(stack: Stack, pids: set[int], rng: random.Random, moment: str, run_seconds: tuple[float, float],
                         helpers: list[subprocess.Popen[bytes]]) -> tuple[str, float | None]:
    """Sleep until the kill. "mid-ship" and "mid-base" wait (up to 30 s more) for a temporary file in
    the root folder or a running pg_basebackup; "after-snapshot" runs `mfcolab snapshot` to the end
    and kills up to 2 s later. Returns what the moment turned out to be, and for "after-snapshot"
    the time before which every acknowledged run must survive."""
    deadline = time.monotonic() + rng.uniform(*run_seconds)
    if moment == "random":
        time.sleep(max(0.0, deadline - time.monotonic()))
        return "random", None
    if moment == "after-snapshot":
        time.sleep(max(0.0, deadline - time.monotonic()))
        requested = time.time()
        subprocess.run([sys.executable, "-m", "mfcolab", "snapshot", *stack.folder_args()], check=True,
                       capture_output=True, timeout=600)
        time.sleep(rng.uniform(0.0, 2.0))
        return moment, requested
    probe: Callable[[], bool]
    if moment == "mid-ship":
        time.sleep(max(0.0, deadline - time.monotonic()))  # then the next ship, whatever it carries
        probe = lambda: _temp_file_in(stack.root / "snapshots")  # noqa: E731
    else:
        # A new base comes by itself after a restore (before the writes start) or when the WAL
        # outweighs the last base; `mfcolab snapshot` asks for one at a random instant.
        time.sleep(max(0.0, deadline - time.monotonic()))
        helpers.append(subprocess.Popen([sys.executable, "-m", "mfcolab", "snapshot", *stack.folder_args()],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        probe = lambda: _basebackup_running(pids)  # noqa: E731
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if probe():
            if moment == "mid-base":
                time.sleep(rng.uniform(0.0, 0.4))  # in pg_basebackup, or copying the base to the root folder
            return moment, None
        time.sleep(0.002)
    return "random", None


# --- one trial --------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrialResult:
    trial: int
    moment: str
    restored: bool = False
    acked: int = 0
    missing: int = 0
    loss_window: float = 0.0  # seconds between the kill and the oldest acknowledged run missing after restore
    temp_files_at_kill: bool = False  # the root folder held a half-written file when everything died
    rsync_at_kill: bool = False  # the mirror's rsync was running when everything died
    restore_seconds: float = 0.0  # `mfcolab up` on the wiped local folder, until healthy
    error: str = ""


@dataclasses.dataclass
class Torture:
    """One stack on one root folder, restored trial after trial."""

    stack: Stack
    survivors: dict[str, set[int]] = dataclasses.field(default_factory=dict)  # flow -> runs seen after a restore

    @classmethod
    def create(cls, folder: Path, *extra: str) -> Torture:
        folder.mkdir(parents=True, exist_ok=True)
        stack = Stack(folder, free_port(), free_port(), list(extra))
        stack.up()
        return cls(stack)

    def close(self) -> None:
        self.stack.down(check=False)


def run_trial(torture: Torture, trial: int, rng: random.Random, moment: str,
              run_seconds: tuple[float, float] = (1.0, 15.0), pause: float = 0.05) -> TrialResult:
    """One trial on a running stack; leaves the restored stack running for the next one."""
    stack = torture.stack
    result = TrialResult(trial, moment)
    pids = stack_processes(stack)
    flow = f"CrashFlow{trial}x{uuid.uuid4().hex[:6]}"
    writer = Writer(stack.port, stack.key, flow, pause)
    writer.start()
    wait_until(lambda: bool(writer.acks) or not writer.is_alive(), 60, interval=0.02, what="the first acknowledged run")
    if not writer.acks:
        raise AssertionError(f"the writer got no acknowledgement: {writer.error}")
    helpers: list[subprocess.Popen[bytes]] = []
    result.moment, guaranteed = wait_for_kill_moment(stack, pids, rng, moment, run_seconds, helpers)
    killed_at = time.time()
    result.rsync_at_kill = "rsync" in kill_everything(pids)
    for helper in helpers:
        helper.wait(60)  # `mfcolab snapshot` gives up once the supervisor is gone
    result.temp_files_at_kill = _temp_file_in(stack.root / "snapshots")
    writer.stopping.set()
    writer.join(60)
    leftovers = processes_using(stack.local)
    if leftovers:
        raise AssertionError(f"stack processes left after the kill: {leftovers}")
    acks = [a for a in writer.acks if a.at <= killed_at]
    result.acked = len(acks)
    _keep_evidence(stack, trial, acks, killed_at)
    shutil.rmtree(stack.local)  # a new runtime

    started = time.monotonic()
    up = stack.up(check=False)
    result.restore_seconds = time.monotonic() - started
    if up.returncode != 0:
        result.error = f"mfcolab up failed ({up.returncode}): {(up.stderr or up.stdout).strip()[-1500:]}"
        return result
    try:
        check_database(stack)
        missing = check_runs(stack, torture, flow, acks)
        check_with_client(stack, flow, torture.survivors[flow])
        if guaranteed is not None and missing and missing[0].at < guaranteed:
            raise AssertionError(f"run {missing[0].run}, acknowledged before a completed `mfcolab snapshot`, is lost")
    except Exception as exc:  # noqa: BLE001 - a failed check is the result being measured
        result.error = f"{type(exc).__name__}: {exc}"[-1500:]
        return result
    result.restored = True
    result.missing = len(missing)
    result.loss_window = max((killed_at - a.at for a in missing), default=0.0)
    return result


def _keep_evidence(stack: Stack, trial: int, acks: list[Ack], killed_at: float) -> None:
    """The dead runtime's logs, the manifest it left and the acknowledgements, for a failed trial's post-mortem."""
    folder = stack.tmp / "trials" / f"{trial:03d}"
    shutil.copytree(stack.local / "logs", folder / "logs", dirs_exist_ok=True)
    manifest = stack.root / "snapshots" / "manifest.json"
    if manifest.exists():
        shutil.copy(manifest, folder / "manifest.json")
    (folder / "acks.json").write_text(json.dumps({"killed_at": killed_at, "acks": [dataclasses.asdict(a) for a in acks]}))


def check_database(stack: Stack) -> None:
    """pg_amcheck over every database; raises with its report when it finds anything."""
    status = stack.status()
    postgres = next(c for c in status["components"] if c["name"] == "postgres")
    run_pg_tool(Settings.resolve(root=stack.root, local=stack.local), "pg_amcheck",
                ["-h", str(stack.local / "run" / "pg"), "-p", str(postgres["port"]), "-U", DB_USER,
                 "--all", "--install-missing", "--heapallindexed"], timeout=600)


def check_runs(stack: Stack, torture: Torture, flow: str, acks: list[Ack]) -> list[Ack]:
    """Every run kept by an earlier restore is still there, and this trial's acknowledged runs
    are complete (run, task, metadata, artifacts) up to a point and missing or partial after it:
    a crash may lose the newest writes, never older ones. Returns the acknowledged runs lost."""
    reader = Reader(stack.port, stack.key)
    try:
        for earlier, runs in torture.survivors.items():
            lost = runs - reader.runs(earlier)
            if lost:
                raise AssertionError(f"{len(lost)} runs of {earlier}, complete after an earlier restore, are gone: {sorted(lost)[:10]}")
        present = reader.runs(flow)
        complete = [a.run in present and reader.complete(flow, a) for a in acks]
    finally:
        reader.close()
    lost = [a for a, ok in zip(acks, complete) if not ok]
    if lost and any(complete[acks.index(lost[0]):]):
        later = [a.run for a, ok in zip(acks, complete) if ok and a.at > lost[0].at]
        raise AssertionError(f"a hole: acknowledged run {lost[0].run} is lost but later runs are there: {later[:10]}")
    torture.survivors[flow] = {a.run for a, ok in zip(acks, complete) if ok}
    return lost


def check_with_client(stack: Stack, flow: str, expected: set[int]) -> None:
    """The Metaflow Client API, in a fresh process, reads the same runs and the newest one's task."""
    if not expected:
        return
    newest = max(expected)
    facts = stack.client(f"""
        runs = sorted(int(r.id) for r in Flow("{flow}"))
        task = Run("{flow}/{newest}")["start"].task
        result = dict(runs=runs, artifacts=sorted(a.id for a in task), attempt=task.metadata_dict.get("attempt"))
    """)
    if not expected <= set(facts["runs"]):
        raise AssertionError(f"the Client API misses runs: {sorted(expected - set(facts['runs']))[:10]}")
    if facts["artifacts"] != ["name", "values", "x"] or facts["attempt"] != "0":
        raise AssertionError(f"the Client API reads run {newest} wrong: {facts}")


def summary(results: list[TrialResult]) -> dict[str, Any]:
    windows = [r.loss_window for r in results if r.restored]
    restores = [r.restore_seconds for r in results if r.restored]
    return {
        "trials": len(results),
        "failed_restores": sum(1 for r in results if not r.restored),
        "killed": {m: sum(1 for r in results if r.moment == m) for m in KILL_MOMENTS},
        "killed_with_a_half_written_file_in_root": sum(1 for r in results if r.temp_files_at_kill),
        "killed_while_rsync_ran": sum(1 for r in results if r.rsync_at_kill),
        "acknowledged_runs": sum(r.acked for r in results),
        "missing_runs": sum(r.missing for r in results if r.restored),
        "largest_loss_window_s": round(max(windows), 2) if windows else None,
        "median_loss_window_s": round(statistics.median(windows), 2) if windows else None,
        "median_restore_s": round(statistics.median(restores), 2) if restores else None,
    }


def format_trial(r: TrialResult) -> str:
    status = "ok" if r.restored else "FAILED"
    half = (" rsync killed" if r.rsync_at_kill else "") + (" half-written file in root" if r.temp_files_at_kill else "")
    return (f"trial {r.trial:3d} {status:6s} kill={r.moment:14s} acked={r.acked:4d} missing={r.missing:3d} "
            f"loss window={r.loss_window:5.2f} s restore+up={r.restore_seconds:5.2f} s{half} {r.error}")


def run_trials(folder: Path, trials: int, seed: int, run_seconds: tuple[float, float], extra: list[str],
               pause: float = 0.05, report: Callable[[TrialResult], None] = lambda r: None) -> list[TrialResult]:
    rng = random.Random(seed)
    torture = Torture.create(folder, *extra)
    results: list[TrialResult] = []
    try:
        for trial in range(trials):
            result = run_trial(torture, trial, rng, KILL_MOMENTS[trial % len(KILL_MOMENTS)], run_seconds, pause)
            results.append(result)
            report(result)
            if not result.restored and torture.stack.status().get("running") is not True:
                torture.stack.down(check=False)
                shutil.rmtree(torture.stack.local, ignore_errors=True)
                torture.stack.up()  # carry on from whatever the root folder holds
    finally:
        torture.close()
    return results



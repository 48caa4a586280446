"""A foreach of 100 three ways, alternating in one run: `--metadata service` through the front door
with mfcolab's Metaflow extension (heartbeats from a thread), the same with the stock client
(heartbeat sidecar processes), and `--metadata local`.

Starts a real stack (`mfcolab up --no-tunnel` in a temporary folder), connects a profile, then
runs the modes in turn for `--rounds` rounds. Per run it measures wall time, the client side's
CPU (the flow process and everything below it: tasks, sidecars, card processes; orphans are
reaped here, this process being their subreaper) and, for service runs, the CPU of the web
process (front door + service) and of Postgres, read from /proc. Prints medians and ratios.

Stopped by Ctrl-C, SIGTERM or an error, it stops the flow that is running (its whole process
group) and then the stack, before it exits.

    .venv/bin/python scripts/bench_flow.py [--rounds 3] [--width 100] [--max-workers 8]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOW = REPO / "tests" / "flows" / "foreach_flow.py"
TICKS = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36
# mode name -> (--metadata, METAFLOW_MFCOLAB_EXTENSION)
MODES = {"extension": ("service", "1"), "stock": ("service", "0"), "local": ("local", "1")}
TARGET = 1.15


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def postgres_pids(postmaster: int) -> list[int]:
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


def total_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass  # a backend that ended meanwhile
    return total


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reap_orphans(deadline_s: float = 30.0) -> None:
    """Wait for the processes re-parented here (sidecars outliving their task), so their CPU
    counts; a run leaves no other child behind."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no child left
        if pid == 0:
            time.sleep(0.05)


class Stopped(BaseException):
    """SIGTERM, turned into an exception so that it leaves through the same cleanup as Ctrl-C."""


def raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def mfcolab(*args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run([sys.executable, "-m", "mfcolab", *args], check=True, capture_output=True, text=True, env=env).stdout


def run_in_own_group(argv: list[str], env: dict[str, str], cwd: Path) -> None:
    """Run `argv` in a process group of its own; if this process is stopped meanwhile, stop the
    whole group (the flow, its tasks and sidecars) before going on."""
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _out, err = process.communicate()
    except BaseException:
        ignore_stop_signals()
        stop_group(process)
        raise
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}:\n{err.decode(errors='replace')[-3000:]}")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(grace)
            break
        except subprocess.TimeoutExpired:
            continue
    reap_orphans(2.0)


def ignore_stop_signals() -> None:
    """On the way out: a second Ctrl-C or SIGTERM must not cut the cleanup short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def stop_stack(folders: list[str]) -> None:
    """`mfcolab down`, in a session of its own so that a Ctrl-C at the terminal does not reach it."""
    ignore_stop_signals()
    print("stopping the stack", file=sys.stderr)
    result = subprocess.run([sys.executable, "-m", "mfcolab", "down", *folders], capture_output=True, text=True,
                            start_new_session=True, check=False)
    if result.returncode != 0:
        print(f"mfcolab down exited {result.returncode}: {result.stderr.strip()}", file=sys.stderr)


@dataclass
class Measures:
    wall: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    web_cpu: list[float] = field(default_factory=list)
    pg_cpu: list[float] = field(default_factory=list)


def run_flow(env: dict[str, str], cwd: Path, width: int, workers: int, mode: str) -> tuple[float, float]:
    """(wall seconds, client CPU seconds) of one run in `mode`."""
    metadata, switch = MODES[mode]
    cpu_before = children_cpu()
    start = time.perf_counter()
    run_in_own_group([sys.executable, str(FLOW), "--no-pylint", "--metadata", metadata, "run", "--width", str(width),
                      "--max-workers", str(workers)], {**env, "METAFLOW_MFCOLAB_EXTENSION": switch}, cwd)
    wall = time.perf_counter() - start
    reap_orphans()
    return wall, children_cpu() - cpu_before


def main() -> int:
    signal.signal(signal.SIGTERM, raise_stopped)
    try:
        measure_and_report()
    except KeyboardInterrupt:
        print("stopped by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    except Stopped:
        print("stopped by SIGTERM", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 0


def measure_and_report() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--max-workers", type=int, default=8)
    args = parser.parse_args()
    tasks_per_run = args.width + 4  # _parameters, start, the foreach tasks, join, end
    measures = {mode: Measures() for mode in MODES}

    with tempfile.TemporaryDirectory(prefix="mfcolab-bench-flow-") as tmp_name:
        tmp = Path(tmp_name)
        folders = ["--root", str(tmp / "root"), "--local", str(tmp / "local")]
        (tmp / "root").mkdir()
        try:
            mfcolab("up", *folders, "--port", str(free_port()), "--pg-port", str(free_port()), "--no-tunnel")
            env = {k: v for k, v in os.environ.items() if not k.startswith("METAFLOW_")}
            env.update(METAFLOW_HOME=str(tmp / "metaflow-home"), USERNAME="bench")
            mfcolab("connect", "--root", str(tmp / "root"), env=env)
            env["METAFLOW_PROFILE"] = "mfcolab"
            status = json.loads(mfcolab("status", *folders, "--json"))
            pids = {c["name"]: c["pid"] for c in status["components"]}
            # From now on (not before: the stack's own daemons must not become ours), processes
            # orphaned below a run come here to be reaped, and their CPU is counted.
            ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            for mode in MODES:  # warm-up: imports, first flow registration, page cache
                run_flow(env, tmp, 4, args.max_workers, mode)
            for round_number in range(args.rounds):
                line = []
                for mode, m in measures.items():
                    web_before = cpu_seconds(pids["web"])
                    pg_before = total_cpu(postgres_pids(pids["postgres"]))
                    wall, client = run_flow(env, tmp, args.width, args.max_workers, mode)
                    m.wall.append(wall)
                    m.client_cpu.append(client)
                    m.web_cpu.append(cpu_seconds(pids["web"]) - web_before)
                    m.pg_cpu.append(total_cpu(postgres_pids(pids["postgres"])) - pg_before)
                    line.append(f"{mode} {wall:.1f} s (client CPU {client:.1f} s)")
                print(f"round {round_number + 1}: " + ", ".join(line), file=sys.stderr)
        finally:
            stop_stack(folders)

    report(measures, args, tasks_per_run)


def report(measures: dict[str, Measures], args: argparse.Namespace, tasks_per_run: int) -> None:
    med = statistics.median
    local = med(measures["local"].wall)
    print(f"foreach of {args.width}, --max-workers {args.max_workers}, {args.rounds} rounds alternating "
          f"(medians; {tasks_per_run} tasks per run):")
    print(f"  {'mode':<10} {'wall s':>7} {'x local':>8} {'client CPU ms/task':>19} {'web CPU ms/task':>16} {'Postgres CPU ms/task':>21}")
    for mode, m in measures.items():
        per_task = [med(values) / tasks_per_run * 1000 for values in (m.client_cpu, m.web_cpu, m.pg_cpu)]
        web, pg = ("-", "-") if mode == "local" else (f"{per_task[1]:.1f}", f"{per_task[2]:.1f}")
        print(f"  {mode:<10} {med(m.wall):>7.1f} {med(m.wall) / local:>8.2f} {per_task[0]:>19.1f} {web:>16} {pg:>21}")
    ratio = med(measures["extension"].wall) / local
    print(f"  service with the extension / local: {ratio:.2f} (target <= {TARGET}): {'met' if ratio <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())

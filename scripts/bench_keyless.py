"""What requests without the key cost the front door: before (a git revision) and now, side by side.

Starts two web processes on 127.0.0.1 (the official engine, so no database is needed): one from
the source at `--before` (default: main), one from this tree. Each gets the same load: SENDERS
threads posting a small gzip body that inflates to ~60 MiB to /login, for SECONDS, while /healthz
is timed. Prints the web process's peak memory and the /healthz latency of each, and the ratios.

    .venv/bin/python scripts/bench_keyless.py [--before main] [--seconds 8] [--senders 4]
"""

from __future__ import annotations

import argparse
import gzip
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def export_source(revision: str, into: Path) -> Path:
    """The package source at `revision`, unpacked into `into` (git archive: nothing is checked out)."""
    archive = subprocess.run(["git", "-C", str(HERE), "archive", revision, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def door_module(source: Path) -> str:
    """The web process's entry module in `source`: `mfcolab.web.server` since the move into
    packages, `mfcolab.web` (a module then) in a revision from before it."""
    return "mfcolab.web.server" if (source / "mfcolab" / "web" / "server.py").exists() else "mfcolab.web"


def start_door(source: Path, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MFCOLAB_")},
        "PYTHONPATH": str(source), "MF_ROOT": str(folder / "root"), "MFCOLAB_LOCAL": str(folder / "local"),
        "MFCOLAB_PORT": str(port), "MFCOLAB_TUNNEL": "0", "MFCOLAB_ENGINE": "official",
        "MFCOLAB_SERVICE_PORT": str(free_port()), "MFCOLAB_UI": "none",
    }
    (folder / "root").mkdir(parents=True)
    log = open(folder / "web.log", "ab")  # noqa: SIM115 - handed to the child
    child = subprocess.Popen([sys.executable, "-m", door_module(source)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                return child, url
        except requests.RequestException:
            time.sleep(0.2)
    child.kill()
    raise SystemExit(f"the door from {source} did not start; see {folder / 'web.log'}")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def healthz_ms(url: str, seconds: float) -> list[float]:
    times = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            requests.get(url + "/healthz", timeout=30)
        except requests.RequestException:
            pass
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.05)
    return times


def flood(url: str, body: bytes, stop: threading.Event, sent: list[int]) -> None:
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/x-www-form-urlencoded"}
    with requests.Session() as http:
        while not stop.is_set():
            try:
                http.post(url + "/login", data=body, headers=headers, timeout=30)
                sent.append(1)
            except requests.RequestException:
                pass


def measure(url: str, pid: int, body: bytes, senders: int, seconds: float) -> dict[str, float]:
    quiet = healthz_ms(url, 2.0)
    stop, sent = threading.Event(), []
    threads = [threading.Thread(target=flood, args=(url, body, stop, sent), daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    loaded = healthz_ms(url, seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=40)
    return {"quiet_ms": statistics.median(quiet), "loaded_ms": statistics.median(loaded),
            "loaded_max_ms": max(loaded), "peak_mib": peak_rss_mib(pid), "bodies": len(sent)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--senders", type=int, default=4)
    args = parser.parse_args()
    body = gzip.compress(b"key=" + b"0" * (60 * 2**20), 9)
    print(f"load: {args.senders} senders of a {len(body) // 1024} KiB gzip body (60 MiB inflated) to /login, "
          f"{args.seconds:.0f} s")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {f"before ({args.before})": export_source(args.before, Path(tmp)), "now": HERE / "src"}
        for name, source in sources.items():
            child, url = start_door(source, Path(tmp) / name.split()[0])
            try:
                results[name] = measure(url, child.pid, body, args.senders, args.seconds)
            finally:
                child.terminate()
                child.wait(10)
    before, now = results.values()
    print(f"{'':24}{'quiet /healthz':>16}{'loaded /healthz':>17}{'loaded max':>12}{'peak memory':>13}{'bodies':>8}")
    for name, r in results.items():
        print(f"{name:24}{r['quiet_ms']:>13.1f} ms{r['loaded_ms']:>14.1f} ms{r['loaded_max_ms']:>9.0f} ms"
              f"{r['peak_mib']:>9.0f} MiB{r['bodies']:>8.0f}")
    print(f"ratio before/now: loaded /healthz median {before['loaded_ms'] / now['loaded_ms']:.1f}x, "
          f"max {before['loaded_max_ms'] / now['loaded_max_ms']:.1f}x, peak memory {before['peak_mib'] / now['peak_mib']:.1f}x")


if __name__ == "__main__":
    main()

"""Time `mfcolab up` to healthy: cold (empty local folder) and warm (same folders again).

Each trial runs the real command in a fresh temporary folder pair, alternating cold and
warm, and prints the median of each beside `python -c "import mfcolab.cli"` measured in
the same run (the fixed cost of starting any command on this machine).

    .venv/bin/python scripts/bench_up.py [--trials 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    cold, warm, baseline = [], [], []
    for trial in range(args.trials):
        with tempfile.TemporaryDirectory(prefix="mfcolab-bench-up-") as tmp:
            folders = ["--root", f"{tmp}/root", "--local", f"{tmp}/local"]
            ports = ["--port", str(free_port()), "--pg-port", str(free_port()), "--no-tunnel"]
            mfcolab = [sys.executable, "-m", "mfcolab"]
            baseline.append(timed([sys.executable, "-c", "import mfcolab.cli"]))
            cold.append(timed([*mfcolab, "up", *folders, *ports]))
            subprocess.run([*mfcolab, "down", *folders], check=True, capture_output=True)
            warm.append(timed([*mfcolab, "up", *folders, *ports]))
            subprocess.run([*mfcolab, "down", *folders], check=True, capture_output=True)
        print(f"trial {trial + 1}: cold {cold[-1]:.2f} s, warm {warm[-1]:.2f} s", file=sys.stderr)
    med = statistics.median
    print(f"up to healthy, median of {args.trials}: cold {med(cold):.2f} s, warm {med(warm):.2f} s "
          f"(target 3 s / 2 s); python startup + import mfcolab.cli {med(baseline):.2f} s; "
          f"cold/import ratio {med(cold) / med(baseline):.1f}, warm/import ratio {med(warm) / med(baseline):.1f}")


if __name__ == "__main__":
    main()

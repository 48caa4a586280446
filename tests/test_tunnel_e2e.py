"""The tunnel end to end, with real processes and real protocol on 127.0.0.1.

CPU side: `mfcolab up` with the stand-in cloudflared. GPU side: its own METAFLOW_HOME and local
folder, reaching https://<words>.trycloudflare.com through HTTPS_PROXY (tests/standins/edge_proxy,
TLS with a test CA): DNS-free proxying, TLS, HTTP, the real hostname. The stand-in is killed
for real while a flow runs; the flow finishes through `connect --watch`'s relay.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from mfcolab.supervisor.process import pid_alive as alive
from helpers import free_port, wait_until
from internet_helpers import CLOUDFLARED, Internet
from mfcolab.client.relay import STATUS_PATH
from mfcolab.tunnel import RATE_LIMITED
from stack_helpers import FLOWS, Stack, mfcolab, run_id_from

pytestmark = pytest.mark.slow


def clean_env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAFLOW_", "MFCOLAB_", "STANDIN_"))}
    env.update(more)
    return env


class CpuSide(Stack):
    def up_with_tunnel(self, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return mfcolab("up", *self.folder_args(), "--port", str(self.port), "--pg-port", str(self.pg_port),
                       "--cloudflared", str(CLOUDFLARED), env=env, check=check)

    def tunnel(self) -> dict[str, Any]:
        return next(c for c in self.status()["components"] if c["name"] == "tunnel")

    def published_url(self) -> str:
        return json.loads((self.root / "connection.json").read_text())["url"]

    def pids(self) -> list[int]:
        status = self.status()
        return [status["supervisor_pid"]] + [c["pid"] for c in status["components"] if c.get("pid")]


class GpuSide:
    def __init__(self, tmp: Path, cpu: CpuSide, net: Internet) -> None:
        self.tmp, self.cpu = tmp, cpu
        self.local = tmp / "gpu-local"
        self.relay_port = free_port()
        self.env = clean_env(**net.client_env(), METAFLOW_HOME=str(tmp / "gpu-metaflow-home"), USERNAME="gpu",
                             PYTHONUNBUFFERED="1")
        self.work = tmp / "gpu-work"
        self.work.mkdir(parents=True, exist_ok=True)

    def connect(self, *more: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return mfcolab("connect", "--root", str(self.cpu.root), "--local", str(self.local), *more, env=self.env,
                       check=check)

    def watch(self) -> subprocess.CompletedProcess[str]:
        return self.connect("--watch", "--relay-port", str(self.relay_port))

    def stop_relay(self) -> None:
        mfcolab("connect", "--stop-relay", "--local", str(self.local), env=self.env)

    def relay_status(self) -> dict[str, Any]:
        return requests.get(f"http://127.0.0.1:{self.relay_port}{STATUS_PATH}", timeout=5).json()

    def relay_pid(self) -> int:
        return int(json.loads((self.local / "relay" / "relay.json").read_text())["pid"])

    def flow_env(self) -> dict[str, str]:
        return {**self.env, "METAFLOW_PROFILE": "mfcolab"}

    def client(self, code: str) -> Any:
        program = "import json\nfrom metaflow import *\nnamespace(None)\n" + code + "\nprint('RESULT=' + json.dumps(result))\n"
        out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=self.flow_env(),
                             cwd=self.work, timeout=300)
        assert out.returncode == 0, out.stderr[-4000:]
        return json.loads([line for line in out.stdout.splitlines() if line.startswith("RESULT=")][-1][len("RESULT="):])


@pytest.fixture
def sides(tmp_path: Path, internet: Internet) -> Iterator[tuple[CpuSide, GpuSide, Path]]:  # noqa: F811
    cpu = CpuSide(tmp_path, free_port(), free_port())
    gpu = GpuSide(tmp_path, cpu, internet)
    ready_file = tmp_path / "tunnel-may-connect"
    ready_file.touch()
    yield cpu, gpu, ready_file
    mfcolab("connect", "--stop-relay", "--local", str(gpu.local), env=gpu.env, check=False)
    cpu.down(check=False)


def test_a_flow_rides_over_a_killed_tunnel(sides: tuple[CpuSide, GpuSide, Path], internet: Internet) -> None:  # noqa: F811
    cpu, gpu, ready_file = sides
    up = cpu.up_with_tunnel(clean_env(**internet.cpu_env(), STANDIN_READY_FILE=str(ready_file)))
    first_url = cpu.published_url()
    assert re.fullmatch(r"https://[a-z]+(-[a-z]+){3}\.trycloudflare\.com", first_url)
    assert first_url in up.stdout and cpu.status()["public_url"] == first_url
    assert cpu.tunnel()["state"] == "running"

    watch = gpu.watch()
    assert f"connected to {first_url}/metadata" in watch.stderr
    assert gpu.relay_status()["upstream"] == first_url

    log_path = gpu.work / "flow.log"
    with open(log_path, "wb") as log:
        flow = subprocess.Popen([sys.executable, str(FLOWS / "slow_foreach_flow.py"), "--no-pylint", "run",
                                 "--max-workers", "2"], stdout=log, stderr=subprocess.STDOUT, env=gpu.flow_env(),
                                cwd=gpu.work)
    try:
        wait_until(lambda: "/nap/" in log_path.read_text() or flow.poll() is not None, timeout=120,
                   what="the flow's foreach to start")
        assert flow.poll() is None, log_path.read_text()[-3000:]

        # The tunnel dies for real; its successor may not connect until the flow has met the outage.
        tunnel = cpu.tunnel()
        ready_file.unlink()
        os.kill(tunnel["pid"], signal.SIGKILL)
        wait_until(lambda: gpu.relay_status()["unavailable"] > 0 or flow.poll() is not None, timeout=120,
                   what="the flow to meet the outage")
        assert flow.poll() is None, log_path.read_text()[-3000:]
        outage = requests.get(f"http://127.0.0.1:{gpu.relay_port}/metadata/ping", timeout=15)
        assert outage.status_code == 503 and "not answering" in outage.json()["message"]
        assert cpu.published_url() == first_url

        ready_file.touch()
        wait_until(lambda: cpu.published_url() != first_url, timeout=120, what="a new URL in connection.json")
        second_url = cpu.published_url()
        assert re.fullmatch(r"https://[a-z]+(-[a-z]+){3}\.trycloudflare\.com", second_url)
        wait_until(lambda: gpu.relay_status()["upstream"] == second_url, timeout=30, what="the relay to follow")

        assert flow.wait(300) == 0, log_path.read_text()[-5000:]
    finally:
        if flow.poll() is None:
            flow.kill()
            flow.wait()

    after = cpu.tunnel()
    assert after["restarts"] >= 1 and after["pid"] != tunnel["pid"] and after["url"] == second_url
    assert cpu.status()["public_url"] == second_url
    run_id = run_id_from(log_path.read_text())
    facts = gpu.client(f"""
run = Run("SlowForeachFlow/{run_id}")
result = dict(ok=run.successful, results=run["join"].task["results"].data, naps=len(list(run["nap"])),
              service=get_metadata())
""")
    assert facts == {"ok": True, "results": [0, 10, 20, 30, 40, 50], "naps": 6,
                     "service": f"service@http://127.0.0.1:{gpu.relay_port}/metadata"}
    # The same run, asked of the CPU side's service directly.
    direct = requests.get(f"{cpu.url}/metadata/flows/SlowForeachFlow/runs/{run_id}", headers={"x-api-key": cpu.key},
                          timeout=10)
    assert direct.status_code == 200 and direct.json()["flow_id"] == "SlowForeachFlow"

    # Without the relay, a fresh `connect --root` finds the new URL by itself.
    plain = mfcolab("connect", "--root", str(cpu.root), env={**gpu.env, "METAFLOW_HOME": str(gpu.tmp / "plain-home")})
    assert f"connected to {second_url}/metadata" in plain.stderr

    relay_pid, stack_pids = gpu.relay_pid(), cpu.pids()
    gpu.stop_relay()
    cpu.down()
    wait_until(lambda: not any(alive(pid) for pid in [relay_pid, *stack_pids]), timeout=30,
               what="every process of both sides to exit")

    # The CPU side is down now: connect says so, plainly, with a non-zero exit.
    for args in ((), ("--watch", "--relay-port", str(gpu.relay_port))):
        down = gpu.connect(*args, check=False)
        assert down.returncode == 1
        assert "the CPU side is down or its tunnel is restarting" in down.stderr, down.stderr
    assert not (gpu.local / "relay" / "relay.json").exists()


def test_rate_limited_tunnel_shows_in_status_and_the_stack_stays_usable(tmp_path: Path, internet: Internet) -> None:  # noqa: F811
    cpu = CpuSide(tmp_path, free_port(), free_port())
    try:
        up = cpu.up_with_tunnel(clean_env(**internet.cpu_env(), STANDIN_FAIL="1015"))
        assert cpu.url in up.stdout
        tunnel = cpu.tunnel()
        assert tunnel["state"] in ("backoff", "starting")
        wait_until(lambda: cpu.tunnel().get("error") == RATE_LIMITED, timeout=30, what="the rate limit in status")
        text = mfcolab("status", *cpu.folder_args()).stdout
        assert "error 1015" in text and "HTTP 429" in text

        # Still usable on the local URL.
        key = cpu.key
        headers = {"x-api-key": key}
        created = requests.post(f"{cpu.url}/metadata/flows/LocalFlow", json={}, headers=headers, timeout=10)
        assert created.status_code == 200
        assert requests.get(f"{cpu.url}/metadata/flows/LocalFlow", headers=headers, timeout=10).json()["flow_id"] == "LocalFlow"
        home = tmp_path / "local-client"
        local = mfcolab("connect", cpu.url, "--key", key, env=clean_env(METAFLOW_HOME=str(home)))
        assert f"connected to {cpu.url}/metadata" in local.stderr

        # No public URL was published, and connect --root says so.
        assert not (cpu.root / "connection.json").exists()
        remote = mfcolab("connect", "--root", str(cpu.root), env=clean_env(METAFLOW_HOME=str(home)), check=False)
        assert remote.returncode == 1 and "has not published a URL" in remote.stderr
        wait_until(lambda: cpu.tunnel()["restarts"] >= 1, timeout=30, what="the supervisor to retry the tunnel")
        assert cpu.status()["ready"]
    finally:
        cpu.down(check=False)

"""Both Colab notebooks executed with papermill against a local stack: the Colab-only cells off, the
stand-in tunnel on, the GPU side reaching the CPU side's public URL through the test internet."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Self

import pytest
import requests
from helpers import free_port, wait_until
from internet_helpers import CLOUDFLARED, STANDINS, Internet
from stack_helpers import Stack, mfcolab
from ui_release import ReleaseServer

from mfcolab.supervisor.process import find_processes
from mfcolab.supervisor.process import pid_alive as alive

papermill = pytest.importorskip("papermill")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def execute(name: str, out: Path, cwd: Path, **parameters: object) -> dict:
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=parameters, kernel_name="python3",
                               cwd=str(cwd), progress_bar=False, execution_timeout=600)
    return json.loads(out.read_text())


def outputs(notebook: dict) -> str:
    text = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            text.append("".join(output.get("text", "")))
    return "\n".join(text)


def test_cpu_and_gpu_notebooks(tmp_path: Path, internet: Internet, release: ReleaseServer,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = Stack(tmp_path / "cpu", free_port(), free_port())
    cpu.tmp.mkdir()
    gpu_local, gpu_work, relay_port = tmp_path / "gpu-local", tmp_path / "gpu-work", free_port()
    gpu_work.mkdir()
    # The kernels (and what they start) inherit this process's environment: the test internet's
    # proxy and CA on both sides, the stand-in's wiring on the CPU side only.
    for name, value in internet.client_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STANDIN_EDGE_DIR", str(internet.hosts))
    # The CPU kernel finds a stand-in google.colab.output, as on Colab (Drive and pip stay off).
    colab_log = tmp_path / "colab-output.jsonl"
    monkeypatch.setenv("PYTHONPATH", str(STANDINS / "colab"))
    monkeypatch.setenv("STANDIN_COLAB_LOG", str(colab_log))
    relay_pid = None
    try:
        cpu_nb = execute("metaflow_service.ipynb", tmp_path / "cpu.ipynb", cpu.tmp, ON_COLAB=False, INSTALL="",
                         ROOT=str(cpu.root), LOCAL=str(cpu.local), TUNNEL=True, STOP_AT_END=False, PORT=cpu.port,
                         EXTRA_ARGS=f"--pg-port {cpu.pg_port} --cloudflared {CLOUDFLARED} "
                                    f"--ui-bundle {release.release_url}")
        public = json.loads((cpu.root / "connection.json").read_text())["url"]
        assert re.fullmatch(r"https://[a-z]+(-[a-z]+){3}\.trycloudflare\.com", public)
        assert f"published for the GPU side: {public}" in outputs(cpu_nb)
        assert cpu.status()["ready"]
        check_the_ui_link(cpu, public, colab_log, outputs(cpu_nb))
        monkeypatch.delenv("PYTHONPATH")

        monkeypatch.delenv("STANDIN_EDGE_DIR")
        monkeypatch.setenv("METAFLOW_HOME", str(tmp_path / "gpu-metaflow-home"))
        monkeypatch.setenv("USERNAME", "gpu-notebook")
        with SidecarWatch(str(tmp_path / "gpu-metaflow-home")) as sidecars:
            gpu_nb = execute("remote_local_metaflow.ipynb", tmp_path / "gpu.ipynb", gpu_work, ON_COLAB=False, INSTALL="",
                             ROOT=str(cpu.root), LOCAL=str(gpu_local), RELAY_PORT=relay_port, EPOCHS=200,
                             WORKDIR=str(gpu_work))
        relay_pid = int(json.loads((gpu_local / "relay" / "relay.json").read_text())["pid"])
        text = outputs(gpu_nb)
        assert f"connected to {public}/metadata" in text
        assert f"via service@http://127.0.0.1:{relay_port}/metadata" in text
        match = re.search(r"the CPU side has TrainFlow (\d+) at " + re.escape(public), text)
        assert match, text[-3000:]
        # mfcolab's Metaflow extension: no heartbeat process was started, the card is on the shared folder.
        assert sidecars.seen == set()
        assert "cards of the train step in the shared datastore: 1" in text
        assert list((cpu.root / "datastore" / ".metaflow" / "mf.cards" / "TrainFlow").rglob("*.html"))

        # The run is in the CPU side's database, as its local URL shows.
        run = requests.get(f"{cpu.url}/metadata/flows/TrainFlow/runs/{match.group(1)}",
                           headers={"x-api-key": cpu.key}, timeout=10).json()
        assert run["user_name"] == "gpu-notebook"
    finally:
        mfcolab("connect", "--stop-relay", "--local", str(gpu_local), check=False)
        pids = [pid for pid in cpu_pids(cpu)] + ([relay_pid] if relay_pid else [])
        cpu.down(check=False)
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=30, what="every process of both notebooks to exit")
    assert not cpu.status()["running"]


class SidecarWatch:
    """Notes, while its block runs, every heartbeat sidecar process of a Metaflow client whose
    METAFLOW_HOME is `home` (other tests on the machine run flows of their own)."""

    def __init__(self, home: str) -> None:
        self.marker = f"METAFLOW_HOME={home}".encode()
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.seen.update(find_processes(
                lambda cmdline, environ: b"sidecar_worker.py" in cmdline and b"heartbeat" in cmdline
                and self.marker in environ.split(b"\0")))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def check_the_ui_link(cpu: Stack, public: str, colab_log: Path, text: str) -> None:
    """The notebook opened the sign-in page through Colab's port proxy, and signing in there shows the UI."""
    calls = [json.loads(line) for line in colab_log.read_text().splitlines()]
    assert calls == [{"call": "serve_kernel_port_as_window", "port": cpu.port, "path": "/login",
                      "anchor_text": "Open the Metaflow UI (sign in with the access key)", "status": 200}]
    assert "[link] Open the Metaflow UI" in text
    assert f"Metaflow UI:      {public}/  (sign in at {public}/login with the access key)" in text
    with requests.Session() as browser:
        page = browser.get(f"{cpu.url}/login", timeout=10)
        assert 'action="/login"' in page.text
        signed_in = browser.post(f"{cpu.url}/login", data={"key": cpu.key, "next": "/"}, timeout=10)
        assert signed_in.status_code == 200 and 'window.METAFLOW_SERVICE="/api"' in signed_in.text


def cpu_pids(stack: Stack) -> list[int]:
    status = stack.status()
    if not status.get("running"):
        return []
    return [status["supervisor_pid"]] + [c["pid"] for c in status["components"] if c.get("pid")]

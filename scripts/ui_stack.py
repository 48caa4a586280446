"""What scripts/bench_ui.py and scripts/bench_live.py share (a module, not a script): a real
stack with the native UI in a temporary folder, and upstream's UI backend to compare it with.

    ui_stack(prefix)   `mfcolab up --no-tunnel --ui native` in a fresh folder; `mfcolab down` on the way out
    UiStack            its folders, ports, key, settings and web process
    UpstreamBackend    upstream's UI backend (metaflow-service 2.5.1), run natively as in tests/ui/oracle.py;
                       its venv is built by `ui_stack` on first use, apart from the tests' copy
    mfcolab(...)       the `mfcolab` command; its output, or RuntimeError with what it said
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The upstream backend's venv, built on first use; apart from the tests' copy, which they may rebuild meanwhile.
os.environ.setdefault("MFCOLAB_TEST_CACHE", str(Path.home() / ".cache" / "mfcolab-bench"))
from oracle import UpstreamBackend, build_venv  # noqa: E402

from mfcolab.settings import Settings  # noqa: E402

__all__ = ["UiStack", "UpstreamBackend", "free_port", "mfcolab", "say", "ui_stack"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def mfcolab(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "mfcolab", *args], check=False, capture_output=True, text=True,
                          env=env, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"mfcolab {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class UiStack:
    tmp: Path
    port: int
    pg_port: int

    @property
    def root(self) -> Path:
        return self.tmp / "root"

    @property
    def local(self) -> Path:
        return self.tmp / "local"

    @property
    def folders(self) -> list[str]:
        return ["--root", str(self.root), "--local", str(self.local)]

    @property
    def front(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def key(self) -> str:
        return (self.root / "access_key").read_text().strip()

    @property
    def settings(self) -> Settings:
        return Settings.resolve(root=self.root, local=self.local, pg_port=self.pg_port)

    def web_pid(self) -> int:
        """The web process (front door, metadata service, UI API), from `mfcolab status`."""
        status = json.loads(mfcolab("status", *self.folders, "--json"))
        for component in status.get("components", []):
            if component.get("name") == "web" and component.get("pid"):
                return int(component["pid"])
        raise RuntimeError(f"no web process in the status: {status}")


@contextmanager
def ui_stack(prefix: str) -> Iterator[UiStack]:
    """A stack with the native UI in a new temporary folder, stopped (`mfcolab down`) on the way out."""
    build_venv()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_name:
        stack = UiStack(Path(tmp_name), free_port(), free_port())
        stack.root.mkdir()
        mfcolab("up", *stack.folders, "--port", str(stack.port), "--pg-port", str(stack.pg_port), "--no-tunnel",
                "--ui", "native")
        try:
            yield stack
        finally:
            mfcolab("down", *stack.folders)

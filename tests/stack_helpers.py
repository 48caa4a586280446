"""Drive a real mfcolab stack the way a user does: the `mfcolab` command, real flows, the Client API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLOWS = Path(__file__).parent / "flows"


def mfcolab(*args: str, env: dict[str, str] | None = None, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "mfcolab", *args], capture_output=True, text=True,
                            env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"mfcolab {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Stack:
    """One stack in its own folders and ports."""

    tmp: Path
    port: int
    pg_port: int
    extra: list[str] = field(default_factory=list)
    shared_root: Path | None = None  # another stack's root folder, instead of one of its own

    @property
    def root(self) -> Path:
        return self.shared_root or self.tmp / "root"

    @property
    def local(self) -> Path:
        return self.tmp / "local"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def folder_args(self) -> list[str]:
        return ["--root", str(self.root), "--local", str(self.local)]

    def up(self, *more: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return mfcolab("up", *self.folder_args(), "--port", str(self.port), "--pg-port", str(self.pg_port),
                       "--no-tunnel", *self.extra, *more, check=check, env=env)

    def down(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return mfcolab("down", *self.folder_args(), check=check)

    def status(self) -> dict[str, Any]:
        return json.loads(mfcolab("status", *self.folder_args(), "--json", check=False).stdout)

    @property
    def key(self) -> str:
        return (self.root / "access_key").read_text().strip()

    def client_env(self) -> dict[str, str]:
        """Environment of a user who ran `mfcolab connect --root` (a profile in their METAFLOW_HOME)."""
        home = self.tmp / "metaflow-home"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("METAFLOW_", "MFCOLAB_"))}
        env.update({"METAFLOW_HOME": str(home), "USERNAME": "tester", "PYTHONUNBUFFERED": "1"})
        if not (home / "config_mfcolab.json").exists():
            mfcolab("connect", "--root", str(self.root), env=env)
        env["METAFLOW_PROFILE"] = "mfcolab"
        return env

    def run_flow(self, flow: str, *args: str, check: bool = True, env: dict[str, str] | None = None,
                 timeout: float = 600) -> subprocess.CompletedProcess[str]:
        run_env = {**self.client_env(), **(env or {})}
        result = subprocess.run([sys.executable, str(FLOWS / flow), "--no-pylint", *args], capture_output=True,
                                text=True, env=run_env, cwd=self.tmp, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{flow} {' '.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
        return result

    def client(self, code: str) -> Any:
        """Run Client API code in a fresh process (Metaflow reads its config at import); it sets `result`."""
        program = "import json\nfrom metaflow import *\nnamespace(None)\n" + textwrap.dedent(code) + "\nprint('RESULT=' + json.dumps(result, default=str))\n"
        out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=self.client_env(),
                             cwd=self.tmp, timeout=300)
        if out.returncode != 0:
            raise AssertionError(f"client code failed:\n{out.stderr[-5000:]}")
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT=")][-1]
        return json.loads(line[len("RESULT="):])


def run_id_from(output: str) -> str:
    """The run id a `flow.py run` printed ("... [1234/start/...]" or "Run ID: 12")."""
    import re

    match = re.search(r"\[(\d+)/\w+/\d+", output)
    assert match, output[-2000:]
    return match.group(1)

"""mfcolab installed into Colab's own environment: Python 3.13 with Colab's preinstalled versions.

The venv holds the pins of /work/shared/reference/colab-pip-freeze.txt that mfcolab's dependency
tree touches (worked out by pip's resolver, so it follows pyproject.toml), and Colab's psycopg2,
a source build that mfcolab uses as it is. Then a plain `pip install` of mfcolab must change none
of them (a Colab user must never be told to restart the runtime), and `up`, a flow run as root
with no user name, and `down` must work there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import free_port
from ui_release import UPSTREAM_UI

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parent.parent
FREEZE = Path("/work/shared/reference/colab-pip-freeze.txt")
FLOWS = PROJECT / "tests" / "flows"
ALWAYS = ("psycopg2",)  # preinstalled on Colab and imported by mfcolab, though not a requirement of it


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def colab_pins() -> dict[str, str]:
    pins = {}
    for line in FREEZE.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not line.startswith("#"):
            pins[_canonical(name)] = version
    return pins


def python313() -> str:
    candidates = [shutil.which("python3.13")]
    pyenv = subprocess.run(["pyenv", "which", "python3.13"], check=False, capture_output=True, text=True,
                           env={**os.environ, "PYENV_VERSION": "3.13.0"}) if shutil.which("pyenv") else None
    if pyenv is not None and pyenv.returncode == 0:
        candidates.append(pyenv.stdout.strip())
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 13)"], check=False).returncode == 0:
            return candidate
    pytest.fail("Python 3.13 (what Colab runs) is not installed: pyenv install 3.13")


@dataclass
class Venv:
    path: Path

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def pip(self, *args: str) -> str:
        result = subprocess.run([self.python, "-m", "pip", "--disable-pip-version-check", *args],
                                check=False, capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, f"pip {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    def versions(self) -> dict[str, str]:
        return {_canonical(p["name"]): p["version"] for p in json.loads(self.pip("list", "--format=json"))}

    def psycopg2_files(self) -> dict[str, str]:
        code = "import psycopg2, os; print(os.path.dirname(psycopg2.__file__))"
        folder = Path(subprocess.run([self.python, "-c", code], capture_output=True, text=True, check=True).stdout.strip())
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _source_copy(tmp: Path) -> Path:
    """The project as a user's pip sees it (no venvs, no build leftovers of this checkout)."""
    ignore = shutil.ignore_patterns(".venv*", ".git", "build", "dist", "*.egg-info", "__pycache__", ".metaflow")
    return Path(shutil.copytree(PROJECT, tmp / "mfcolab-source", ignore=ignore))


@dataclass
class ColabVenv:
    venv: Venv
    before: dict[str, str]
    psycopg2_before: dict[str, str]
    install_output: str


@pytest.fixture(scope="module")
def colab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColabVenv]:
    tmp = tmp_path_factory.mktemp("colab")
    venv = Venv(tmp / "venv")
    subprocess.run([python313(), "-m", "venv", str(venv.path)], check=True)
    source = _source_copy(tmp)
    # The names in mfcolab's dependency tree, as pip resolves it today.
    report = tmp / "report.json"
    venv.pip("install", "-q", "--dry-run", "--ignore-installed", "--report", str(report), str(source))
    tree = {_canonical(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]}
    pins = colab_pins()
    wanted = sorted((tree | set(ALWAYS)) & set(pins))
    assert "psycopg2" in wanted and "aiohttp" in wanted and "typer" in wanted, wanted
    constraints = tmp / "colab-constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    venv.pip("install", "-q", "-c", str(constraints), *(f"{name}=={pins[name]}" for name in wanted))
    before = venv.versions()
    psycopg2_before = venv.psycopg2_files()
    output = venv.pip("install", str(source))  # what a user runs in a notebook cell (`pip install mfcolab`)
    yield ColabVenv(venv, before, psycopg2_before, output)


def test_colab_install_changes_no_preinstalled_package(colab: ColabVenv) -> None:
    after = colab.venv.versions()
    changed = {name: (version, after.get(name)) for name, version in colab.before.items() if after.get(name) != version}
    assert not changed, f"pip install mfcolab changed preinstalled packages (before, after): {changed}"
    assert "psycopg2-binary" not in after, "psycopg2-binary writes into the psycopg2 folder Colab's psycopg2 owns"
    assert colab.venv.psycopg2_files() == colab.psycopg2_before


def test_colab_up_a_flow_as_root_and_down(colab: ColabVenv, folder: Path) -> None:

    bin_dir = colab.venv.path / "bin"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("METAFLOW_", "MFCOLAB_")) and k not in ("USER", "USERNAME", "SUDO_USER", "LOGNAME", "VIRTUAL_ENV")}
    env.update({"METAFLOW_HOME": str(folder / "metaflow-home"), "PATH": f"{bin_dir}:{env.get('PATH', '')}"})
    folders = ["--root", str(folder / "root"), "--local", str(folder / "local")]
    (folder / "root").mkdir()

    def mfcolab(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(bin_dir / "mfcolab"), *args], check=False, capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, f"mfcolab {args[0]}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        return result

    ui_bundle = shutil.copytree(UPSTREAM_UI, folder / "ui-bundle")  # no download from GitHub
    mfcolab("up", *folders, "--port", str(free_port()), "--pg-port", str(free_port()), "--no-tunnel", "--ui-bundle", str(ui_bundle))
    try:
        mfcolab("connect", "--root", str(folder / "root"))
        env["METAFLOW_PROFILE"] = "mfcolab"
        run = subprocess.run([str(bin_dir / "python"), str(FLOWS / "linear_flow.py"), "--no-pylint", "run", "--alpha", "4"],
                             check=False, capture_output=True, text=True, env=env, cwd=folder, timeout=600)
        web_log = folder / "local" / "logs" / "web.log"
        assert run.returncode == 0, f"{run.stderr[-4000:]}\n{web_log}:\n{web_log.read_text()[-4000:]}"
        read = subprocess.run([str(bin_dir / "python"), "-c", ("from metaflow import Flow, namespace\nnamespace(None)\n"
                               "r = Flow('LinearFlow').latest_run\nprint(r.successful, r.data.message)")],
                              check=False, capture_output=True, text=True, env=env, cwd=folder, timeout=300)
        assert read.stdout.strip() == "True plain:6", read.stderr[-3000:]
    finally:
        mfcolab("down", *folders)

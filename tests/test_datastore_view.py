"""The UI backend's copy of the datastore (mfcolab.containers.datastore_view): what it copies, and the shim."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from helpers import wait_until
from mfcolab.containers.datastore_view import ViewSync, sync_view, write_shim


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.lstat().st_mode, p.lstat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_the_view_copies_new_and_changed_files_and_never_touches_the_datastore(tmp_path: Path) -> None:
    datastore, view = tmp_path / "datastore", tmp_path / "view"
    task = datastore / "Flow" / "1" / "start" / "1"
    task.mkdir(parents=True)
    (task / "0.runtime_stdout.log").write_text("line\n")
    (task / "0.data.json").write_text("{}")
    os.chmod(task / "0.data.json", 0o600)  # as Drive shows every file
    os.chmod(task, 0o700)
    (datastore / "secret").write_text("outside")
    (datastore / "Flow" / "link").symlink_to(tmp_path / "secret-dir")
    (tmp_path / "secret-dir").mkdir()
    (tmp_path / "secret-dir" / "key").write_text("k")
    before = snapshot(datastore)

    first = sync_view(datastore, view)
    assert (first.files, first.seen) == (3, 3)
    copied = view / "Flow" / "1" / "start" / "1" / "0.data.json"
    assert copied.read_text() == "{}" and stat.S_IMODE(copied.stat().st_mode) == 0o644  # readable by the container user
    assert stat.S_IMODE(copied.parent.stat().st_mode) == 0o755
    assert copied.stat().st_mtime_ns == (task / "0.data.json").stat().st_mtime_ns
    assert not (view / "Flow" / "link").exists()  # a link in the shared folder is not followed

    assert sync_view(datastore, view).files == 0  # nothing new
    (task / "0.runtime_stdout.log").write_text("line\nmore\n")
    again = sync_view(datastore, view)
    assert again.files == 1 and (view / "Flow/1/start/1/0.runtime_stdout.log").read_text() == "line\nmore\n"
    # A file gone from the view (moved out by the backend) comes back; nothing is deleted anywhere.
    (view / "secret").unlink()
    assert sync_view(datastore, view).files == 1 and (view / "secret").read_text() == "outside"
    assert snapshot(datastore) == {**before, "Flow/1/start/1/0.runtime_stdout.log": snapshot(datastore)[
        "Flow/1/start/1/0.runtime_stdout.log"]}
    assert stat.S_IMODE(task.stat().st_mode) == 0o700 and stat.S_IMODE((task / "0.data.json").stat().st_mode) == 0o600


def test_a_missing_datastore_gives_an_empty_view(tmp_path: Path) -> None:
    sync = ViewSync(tmp_path / "not-yet", tmp_path / "view")
    assert sync.sync().seen == 0 and (tmp_path / "view").is_dir()


def test_the_shim_makes_a_move_out_of_the_datastore_a_copy(tmp_path: Path) -> None:
    datastore, cache = tmp_path / "datastore", tmp_path / "cache"
    datastore.mkdir()
    cache.mkdir()
    (datastore / "0.mflog").write_text("a log line\n")
    (cache / "own").write_text("the cache's own file\n")
    shim = write_shim(tmp_path / "shim")
    program = (
        "import shutil, sys\n"
        "shutil.move(sys.argv[1] + '/0.mflog', sys.argv[2] + '/0.mflog')\n"
        "shutil.move(sys.argv[2] + '/own', sys.argv[2] + '/moved')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(shim), "MFCOLAB_DATASTORE_ROOT": str(datastore)}
    subprocess.run([sys.executable, "-c", program, str(datastore), str(cache)], env=env, check=True)
    assert (datastore / "0.mflog").read_text() == "a log line\n"  # still in the datastore
    assert (cache / "0.mflog").read_text() == "a log line\n"  # and in the cache
    assert not (cache / "own").exists() and (cache / "moved").exists()  # other moves stay moves


# What the UI backend's cache workers do for a task page, each in its own process: size the
# task's log (the log action), or size and load an artifact (the artifact action).
READ = """
import sys
from metaflow import DataArtifact, Task, namespace
namespace(None)
pathspec, what = sys.argv[1], sys.argv[2]
if what == "log":
    print("log", Task(pathspec, attempt=0).stdout_size)
else:
    try:
        artifact = DataArtifact(pathspec + "/alpha", attempt=0)
        print("value", artifact.size > 0, artifact.data)
    except TypeError as exc:
        print("TypeError", exc)
"""


def test_the_shim_keeps_artifacts_readable_after_a_log_read_and_after_the_view_lagged(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("METAFLOW_")}
    env.update({"METAFLOW_DEFAULT_METADATA": "local", "METAFLOW_DEFAULT_DATASTORE": "local",
                "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "datastore"), "USERNAME": "tester",
                "METAFLOW_HOME": str(tmp_path / "home")})
    flow = Path(__file__).parent / "flows" / "linear_flow.py"
    subprocess.run([sys.executable, str(flow), "--no-pylint", "run", "--alpha", "7"], env=env, cwd=tmp_path,
                   check=True, capture_output=True, timeout=600)
    run = next(path for path in (tmp_path / "datastore" / ".metaflow" / "LinearFlow").iterdir() if path.name.isdigit())
    start, end = (next((run / step).glob("[0-9]*")) for step in ("start", "end"))
    shim = write_shim(tmp_path / "shim")

    def read(task: Path, what: str, *, with_shim: bool) -> str:
        run_env = {**env, "METAFLOW_CLIENT_CACHE_PATH": str(tmp_path / f"cache-{with_shim}")}
        if with_shim:
            run_env.update({"PYTHONPATH": str(shim), "MFCOLAB_DATASTORE_ROOT": str(tmp_path / "datastore")})
        return subprocess.run([sys.executable, "-c", READ, "/".join(task.parts[-4:]), what], env=run_env,
                              check=True, capture_output=True, text=True, timeout=300).stdout.strip()

    def lagging_view(task: Path, *, with_shim: bool) -> str:
        """An artifact read while the task's files are not there yet, then again once they are."""
        hidden = tmp_path / "hidden"
        hidden.mkdir(exist_ok=True)
        names = [path.name for path in task.glob("0.*") if not path.name.endswith(".log")]
        for name in names:
            (task / name).rename(hidden / name)
        assert read(task, "artifact", with_shim=with_shim).startswith("TypeError")
        for name in names:
            (hidden / name).rename(task / name)
        return read(task, "artifact", with_shim=with_shim)

    assert read(start, "log", with_shim=True).startswith("log ")
    assert read(start, "artifact", with_shim=True) == "value True 7"
    assert lagging_view(end, with_shim=True) == "value True 7"
    # Without the shim Metaflow's client caches metadata without artifacts, and the task's
    # artifacts are gone for every later read. When these pass, Metaflow has fixed it and the
    # shim's guard can go.
    assert read(start, "log", with_shim=False).startswith("log ")
    assert read(start, "artifact", with_shim=False).startswith("TypeError"), "Metaflow kept the artifact after a log read"
    assert lagging_view(end, with_shim=False).startswith("TypeError"), "Metaflow kept the artifact after a lag"


def test_the_view_syncs_when_the_container_asks(tmp_path: Path) -> None:
    datastore, view, requests = tmp_path / "datastore", tmp_path / "view", tmp_path / "requests"
    datastore.mkdir()
    requests.mkdir()
    sync = ViewSync(datastore, view, interval=3600, request=requests / "request", synced=tmp_path / "synced")
    sync.sync()
    sync.start()
    try:
        (datastore / "0.data.json").write_text("{}")
        asked = time.time()
        (requests / "request").touch()
        wait_until(lambda: (view / "0.data.json").exists() and float((tmp_path / "synced").read_text()) >= asked,
                   timeout=60, interval=0.1, what="a sync on request")
    finally:
        sync.stop()
    assert (view / "0.data.json").read_text() == "{}"


def test_the_shim_reads_a_task_the_view_lacks_after_a_sync_on_demand(tmp_path: Path) -> None:
    """Upstream's artifact read of a finished task that the view has not copied yet: the shim asks
    for a sync, waits for it, and reads the value (without it: a TypeError, cached by upstream)."""
    recorded, real = tmp_path / "datastore", tmp_path / "real"
    env = {key: value for key, value in os.environ.items() if not key.startswith("METAFLOW_")}
    env.update({"METAFLOW_DEFAULT_METADATA": "local", "METAFLOW_DEFAULT_DATASTORE": "local",
                "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(recorded), "USERNAME": "tester",
                "METAFLOW_HOME": str(tmp_path / "home"), "METAFLOW_CLIENT_CACHE_PATH": str(tmp_path / "cache")})
    flow = Path(__file__).parent / "flows" / "linear_flow.py"
    subprocess.run([sys.executable, str(flow), "--no-pylint", "run", "--alpha", "7"], env=env, cwd=tmp_path,
                   check=True, capture_output=True, timeout=600)
    # The runs recorded `recorded` as their datastore; the container sees the view there.
    recorded.rename(real)
    sync_view(real, recorded)
    run = next(path for path in (recorded / ".metaflow" / "LinearFlow").iterdir() if path.name.isdigit())
    end = next((run / "end").glob("[0-9]*"))
    for name in [path for path in end.glob("0.*") if not path.name.endswith(".log")]:
        name.unlink()  # not copied yet
    shim = write_shim(tmp_path / "shim")
    (tmp_path / "requests").mkdir()
    sync = ViewSync(real, recorded, interval=3600, request=tmp_path / "requests" / "request", synced=shim / "synced")
    sync.start()
    try:
        out = subprocess.run([sys.executable, "-c", READ, "/".join(end.parts[-4:]), "artifact"], check=True,
                             env={**env, "PYTHONPATH": str(shim), "MFCOLAB_DATASTORE_ROOT": str(recorded),
                                  "MFCOLAB_SYNC_REQUEST": str(tmp_path / "requests" / "request")},
                             capture_output=True, text=True, timeout=300).stdout.strip()
    finally:
        sync.stop()
    assert out == "value True 7"

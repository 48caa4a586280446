"""A running task's output sent to the service while the task runs, from the runtime that captures it.

Metaflow's local runtime reads each task's stdout and stderr from pipes (`metaflow.runtime.Worker`)
into in-memory buffers (`TruncatedBuffer`, one per stream) and writes them to the datastore as
`<attempt>.runtime_<stream>.log` only when the task ends. `LogShipper` takes a copy of what each
buffer takes (the same mflog-stamped bytes that will be written at the end) and a daemon thread
sends them to the service every second: `POST <service>/flows/.../tasks/{t}/logs/{stream}?attempt=A&offset=N`
with the bytes from N on. The UI shows them until the datastore has the log. When a task has
ended (its log saved), the service is told to forget its copy (`DELETE` on the same path).

It never stands in the flow's way: the runtime's thread only appends to a bounded buffer under a
lock; the requests go from the shipper's thread with short timeouts; failures are silent and back
off; a log that outgrew its buffer while the service was away, or that the service refuses, is no
longer sent (the datastore's log shows everything at the end). The task's own process, its
output and everything Metaflow records are untouched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

SHIP_INTERVAL = 1.0  # seconds between two rounds of sending
PENDING_MAX = 4 * 1024 * 1024  # bytes of one log kept while the service does not take them
CHUNK_MAX = 1024 * 1024  # bytes of one request (the service's limit)
REQUEST_TIMEOUT = (2.0, 5.0)
BACKOFF_MAX = 30.0
STOP_WAIT_SECONDS = 3.0
STREAMS = (("stdout", "_stdout"), ("stderr", "_stderr"))


@dataclass
class LiveLog:
    url: str
    attempt: int
    pending: bytearray = field(default_factory=bytearray)
    sent: int = 0  # bytes the service has
    ended: bool = False
    given_up: bool = False


class LogShipper:
    """The logs of one runtime's running tasks, and the thread that sends them."""

    def __init__(self, service_url: str, headers: Mapping[str, str]) -> None:
        self.service_url = service_url.rstrip("/")
        self._headers = dict(headers)
        self._lock = threading.Lock()
        self._logs: list[LiveLog] = []
        self._stopping = threading.Event()
        self._failures = 0
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, name="mfcolab-live-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Send what is left (a few seconds at most) and stop."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT_SECONDS)

    def open(self, flow: str, run: str, step: str, task: str, attempt: int, stream: str) -> LiveLog:
        f, r, s, t = (quote(part, safe="") for part in (flow, run, step, task))
        log = LiveLog(f"{self.service_url}/flows/{f}/runs/{r}/steps/{s}/tasks/{t}/logs/{stream}", attempt)
        with self._lock:
            self._logs.append(log)
        return log

    def add(self, log: LiveLog, data: bytes) -> None:
        """Called by the runtime's thread with each piece of a log; never blocks on the network."""
        with self._lock:
            if log.ended or log.given_up:
                return
            if len(log.pending) + len(data) > PENDING_MAX:
                log.given_up = True
                log.pending.clear()
                return
            log.pending += data

    def end(self, log: LiveLog) -> None:
        """The task ended and its log is in the datastore: the service may forget its copy."""
        with self._lock:
            log.ended = True
            log.pending.clear()

    def ship(self) -> None:
        """One round: each log's new bytes to the service, each ended log forgotten there."""
        with self._lock:
            work = [(log, log.ended, bytes(log.pending[:CHUNK_MAX])) for log in self._logs]
        for log, ended, chunk in work:
            if ended or log.given_up:
                self._forget(log, ended and log.sent > 0)
            elif chunk and not self._send(log, chunk):
                return  # the service is away: try again after the backoff

    def _send(self, log: LiveLog, chunk: bytes) -> bool:
        answer = self._request("POST", log, data=chunk, offset=log.sent)
        if answer is None:
            return False
        if answer.status_code == 200:
            with self._lock:
                del log.pending[: len(chunk)]
                log.sent += len(chunk)
        else:  # refused (no such task, no such route, a lost copy): send this log no more
            with self._lock:
                log.given_up = True
                log.pending.clear()
        return True

    def _forget(self, log: LiveLog, tell_service: bool) -> None:
        if tell_service:
            self._request("DELETE", log)
        with self._lock:
            if log in self._logs:
                self._logs.remove(log)

    def _request(self, method: str, log: LiveLog, data: bytes | None = None,
                 **params: int) -> requests.Response | None:
        try:
            answer = self._session.request(method, log.url, params={"attempt": log.attempt, **params},
                                           data=data, headers=self._headers, timeout=REQUEST_TIMEOUT)
        except requests.RequestException:
            self._failures += 1
            return None
        if answer.status_code >= 500:
            self._failures += 1
            return None
        self._failures = 0
        return answer

    def _run(self) -> None:
        while not self._stopping.wait(min(SHIP_INTERVAL * 2**self._failures, BACKOFF_MAX)):
            self._ship_quietly()
        self._ship_quietly()
        self._session.close()

    def _ship_quietly(self) -> None:
        try:
            self.ship()
        except Exception:  # noqa: BLE001 - nothing here may ever end the runtime or print into a log
            self._failures += 1


# --- the runtime's side --------------------------------------------------------------------------

_current: LogShipper | None = None


def start(service_url: str, headers: Mapping[str, str], warn: Callable[[str], None]) -> None:
    """In a runtime process: send the output of every task it starts from now on."""
    global _current
    try:
        problem = _hook_workers()
        if problem is None and _current is None:
            _current = LogShipper(service_url, headers)
            _current.start()
    except Exception as exc:  # noqa: BLE001 - the run goes on as stock
        problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        warn(f"task logs show in the UI only when each task ends ({problem})")


def stop() -> None:
    global _current
    shipper, _current = _current, None
    if shipper is not None:
        shipper.stop()


def _hook_workers() -> str | None:
    """Wrap `Worker.__init__` and `Worker.terminate` once; what differs from the known internals, if anything."""
    import sys

    runtime = sys.modules.get("metaflow.runtime")
    worker = getattr(runtime, "Worker", None)
    if worker is None or not callable(getattr(worker, "terminate", None)):
        return "metaflow.runtime.Worker is gone"
    if getattr(worker.__init__, "_mfcolab", False):
        return None
    stock_init, stock_terminate = worker.__init__, worker.terminate

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        stock_init(self, *args, **kwargs)
        shipper = _current
        if shipper is not None:
            _watch(shipper, self)

    def terminate(self: Any) -> Any:
        try:
            return stock_terminate(self)
        finally:
            shipper = self.__dict__.get("_mfcolab_shipper")
            for log in self.__dict__.get("_mfcolab_logs", ()):
                shipper.end(log)

    __init__._mfcolab = True  # type: ignore[attr-defined]
    worker.__init__ = __init__
    worker.terminate = terminate
    return None


def _watch(shipper: LogShipper, worker: Any) -> None:
    """Copy what the worker's two buffers take into two live logs (nothing for a cloned task)."""
    try:
        task = worker.task
        if getattr(task, "is_cloned", False):
            return
        logs = []
        for stream, attribute in STREAMS:
            buffer = getattr(worker, attribute)
            if not hasattr(getattr(buffer, "_buffer", None), "tell"):
                return
            log = shipper.open(task.flow_name, str(task.run_id), task.step, str(task.task_id), int(task.retries), stream)
            buffer.write = _tee(buffer, buffer.write, shipper, log)
            logs.append(log)
        worker._mfcolab_logs = logs
        worker._mfcolab_shipper = shipper
    except Exception:  # noqa: BLE001 - a task without a live log still runs as stock
        return


def _tee(buffer: Any, stock_write: Callable[..., Any], shipper: LogShipper, log: LiveLog) -> Callable[..., Any]:
    """`TruncatedBuffer.write` that also hands what the buffer took to the shipper."""

    def write(bytedata: Any, system_msg: bool = False) -> Any:
        before = buffer._buffer.tell()
        result = stock_write(bytedata, system_msg)
        try:
            grown = buffer._buffer.tell() - before
            if grown > 0:
                taken = bytedata if grown == len(bytedata) else buffer._buffer.getvalue()[before:]
                shipper.add(log, bytes(taken))
        except Exception:  # noqa: BLE001 - the runtime's own write has happened; nothing else matters
            pass
        return result

    return write

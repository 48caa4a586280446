"""A Metaflow heartbeat sent from a daemon thread of the process it speaks for.

Metaflow's stock client starts a sidecar process per task (and one per run) whose only job is
to POST `{}` to the task's (or run's) heartbeat route every ten seconds. `HeartbeatThread` sends
the same request on the same schedule from inside the process, so a task costs no extra Python
interpreter, and the beats stop the moment the process dies (SIGKILL included).

The wire facts it keeps: the body is the text `{}`, the headers are the client's service
headers (the access key), the answer is a JSON string holding a JSON object whose
`wait_time_in_seconds` sets the next wait (ten seconds when absent), a failed beat is retried
after 1.5**n seconds (a beat less than ten seconds after the last recorded one is refused with
a 404, so the first beats of a task are retried this way too), nothing is printed, and stopping
sends one last beat.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping

import requests

DEFAULT_WAIT_SECONDS = 10.0
# A beat that hangs must not hold up the next ones (or the end of the task) for ever.
REQUEST_TIMEOUT = (5.0, 20.0)
# How long stopping waits for the last beat before the process goes on ending.
STOP_WAIT_SECONDS = 5.0


class HeartbeatError(Exception):
    """A heartbeat that did not reach the service or was not accepted."""


class HeartbeatThread:
    """Beats to one URL until `terminate()`; one instance per provider, as with the sidecar."""

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self.url = url
        self._headers = dict(headers)
        self._stopping = threading.Event()
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, name="mfcolab-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def terminate(self) -> None:
        """Stop beating after one last beat (waited for a few seconds at most)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT_SECONDS)

    def beat(self) -> float:
        """Send one heartbeat; return the wait before the next one."""
        try:
            response = self._session.post(self.url, data="{}", headers=self._headers, timeout=REQUEST_TIMEOUT)
        except requests.RequestException as exc:
            raise HeartbeatError(f"heartbeat to {self.url} failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise HeartbeatError(f"heartbeat to {self.url} answered {response.status_code}")
        return _wait_from(response)

    def _run(self) -> None:
        failures = 0
        wait = 0.0
        while not self._stopping.wait(wait):
            try:
                wait = self.beat()
                failures = 0
            except HeartbeatError:
                # Silent, as the stock sidecar is (its output goes to /dev/null): anything
                # printed here would land in the task's recorded logs.
                failures += 1
                wait = 1.5**failures
        try:
            self.beat()
        except HeartbeatError:
            pass  # the last beat is a courtesy: the end of the task is recorded by other means
        self._session.close()


def _wait_from(response: requests.Response) -> float:
    """The service's `wait_time_in_seconds`, or the default for an answer without one."""
    try:
        body = response.json()
        if isinstance(body, str):
            body = json.loads(body)
        wait = float(body.get("wait_time_in_seconds") or 0) if isinstance(body, dict) else 0.0
    except (ValueError, TypeError):
        wait = 0.0
    return wait if wait > 0 else DEFAULT_WAIT_SECONDS

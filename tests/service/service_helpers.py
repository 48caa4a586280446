"""Small builders for service tests: create the objects a test needs over real HTTP."""

from __future__ import annotations

from typing import Any

import requests

CLIENT_SYSTEM_TAGS = ["metaflow_version:2.19.39", "user:tester", "runtime:dev"]


class Api:
    """Paths and create calls against one service base URL."""

    def __init__(self, http: requests.Session, base: str) -> None:
        self.http = http
        self.base = base

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url(path), timeout=30, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.http.post(self.url(path), json=body, timeout=30, **kwargs)

    def patch(self, path: str, body: Any = None) -> requests.Response:
        return self.http.patch(self.url(path), json=body, timeout=30)

    def flow(self, flow: str) -> dict[str, Any]:
        resp = self.post(f"/flows/{flow}", {"flow_id": flow})
        assert resp.status_code == 200, resp.text
        return resp.json()

    def run(self, flow: str, *, tags: list[str] | None = None, system_tags: list[str] | None = None,
            run_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "flow_id": flow, "user_name": "tester", "tags": tags or [],
            "system_tags": CLIENT_SYSTEM_TAGS if system_tags is None else system_tags,
        }
        if run_id is not None:
            body["run_number"] = run_id
        resp = self.post(f"/flows/{flow}/run", body)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def step(self, flow: str, run: Any, step: str) -> dict[str, Any]:
        resp = self.post(f"/flows/{flow}/runs/{run}/steps/{step}/step",
                         {"user_name": "tester", "tags": [], "system_tags": []})
        assert resp.status_code == 200, resp.text
        return resp.json()

    def task(self, flow: str, run: Any, step: str, *, task_id: str | None = None,
             system_tags: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"user_name": "tester", "tags": [],
                                "system_tags": CLIENT_SYSTEM_TAGS if system_tags is None else system_tags}
        if task_id is not None:
            body["task_id"] = task_id
        resp = self.post(f"/flows/{flow}/runs/{run}/steps/{step}/task", body)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def task_path(self, flow: str, run: Any, step: str, task: Any) -> str:
        return f"/flows/{flow}/runs/{run}/steps/{step}/tasks/{task}"

    def chain(self, flow: str, step: str = "start", **run_options: Any) -> tuple[Any, Any]:
        """A flow, a run, a step and one task; returns (run_number, task_id) as exposed."""
        self.flow(flow)
        run = self.run(flow, **run_options)["run_number"]
        self.step(flow, run, step)
        task = self.task(flow, run, step)["task_id"]
        return run, task


def metadatum(field: str, value: Any, attempt: int = 0, type_: str | None = None) -> dict[str, Any]:
    return {"field_name": field, "value": value, "type": type_ or field, "user_name": "tester",
            "tags": [f"attempt_id:{attempt}"], "system_tags": []}


def artifact(name: str, attempt: int = 0, sha: str | None = None) -> dict[str, Any]:
    return {"name": name, "location": f":root:/ds/{name}", "ds_type": "local", "sha": sha or f"sha-{name}-{attempt}",
            "type": "metaflow.artifact", "content_type": "pickle-v4", "attempt_id": attempt,
            "user_name": "tester", "tags": [], "system_tags": []}

"""The routes the UI calls on every page load, and the autocomplete routes."""

from __future__ import annotations

from ui_helpers import Api, Runs


def test_features_plugins_links_notifications_version(api: Api) -> None:
    assert api.ok("/features")["FEATURE_ARTIFACT_TABLE"] is True
    assert api.ok("/plugin") == []
    links = api.ok("/links")
    assert isinstance(links, list) and all({"href", "label"} <= set(link) for link in links)
    assert api.ok("/notifications", **{"start:le": "1", "end:ge": "1"}) == []
    version = api.get("/version")
    assert version.status_code == 200 and version.headers["Content-Type"].startswith("text/plain")
    assert version.text.startswith("mfcolab ")


def test_autocomplete(api: Api, runs: Runs) -> None:
    flows = api.ok("/flows/autocomplete", _limit="5", **{"flow_id:co": "flow"})
    assert flows["status"] == 200 and len(flows["data"]) == 5 and all("Flow" in f for f in flows["data"])
    assert api.data("/flows/autocomplete", **{"flow_id:co": "inearf"}) == ["LinearFlow"]
    assert api.data("/tags/autocomplete", **{"tag:re": "project:.*uit.*"}) == ["project:uitest"]
    assert "ui-tag" in api.data("/tags/autocomplete", _limit="5", **{"tag:co": "ui-t"})
    assert api.data("/flows/LinearFlow/runs/autocomplete", **{"run:co": runs.linear}) == [runs.linear]
    steps = api.data(f"/flows/BranchFlow/runs/{runs.branch}/steps/autocomplete", **{"step_name:co": "t"})
    assert set(steps) == {"start", "left", "right", "_parameters"}
    names = api.data(f"/flows/LinearFlow/runs/{runs.linear}/artifacts/autocomplete", **{"name:co": "tot"})
    assert names == ["total"]

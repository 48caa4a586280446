"""`mfcolab status` as text: one line per component, then the URL and the snapshots."""

from __future__ import annotations

import time
from typing import Any


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def render(report: dict[str, Any]) -> str:
    if not report.get("running"):
        lines = [f"not running (local folder {report['local']})"]
    else:
        lines = [f"running: {report.get('phase', '?')}, supervisor pid {report.get('supervisor_pid')}"]
        lines.append(f"{'component':<12} {'state':<10} {'pid':>7} {'port':>6}  details")
        for c in report.get("components", []):
            details = c.get("url") or c.get("reason") or ""
            if c.get("error"):
                details = c["error"]
            lines.append(f"{c['name']:<12} {c['state']:<10} {c.get('pid') or '-':>7} {c.get('port') or '-':>6}  {details}")
        lines.append(f"front door: {report.get('url')}")
        if report.get("public_url") and report.get("public_url") != report.get("url"):
            lines.append(f"public URL: {report['public_url']}")
        mirror = report.get("mirror") or {}
        if mirror:
            state = mirror.get("state", "?")
            reason = f" ({mirror['error']})" if mirror.get("error") else ""
            lines.append(f"mirror: {state}{reason}")
    snapshots = report.get("snapshots")
    if isinstance(snapshots, dict) and snapshots.get("error"):
        lines.append(f"snapshots: unreadable ({snapshots['error']})")
    elif snapshots:
        newest = snapshots[-1] if isinstance(snapshots, list) else snapshots
        when = newest.get("updated_at") or newest.get("created_at")
        age = f", {_age(time.time() - when)} old" if isinstance(when, (int, float)) else ""
        size = newest.get("size_bytes") or newest.get("bytes")
        size_text = f", {size / 1e6:.1f} MB" if isinstance(size, (int, float)) else ""
        lines.append(f"snapshots: {len(snapshots)} in {report['root']}; newest {newest.get('generation', '?')}{age}{size_text}")
    else:
        lines.append(f"snapshots: none yet in {report['root']}")
    return "\n".join(lines)

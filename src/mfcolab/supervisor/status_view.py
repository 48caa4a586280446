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
        lines += _mirror_lines(report.get("mirror") or {})
    lines.append(_snapshot_line(report.get("snapshots"), report["root"]))
    return "\n".join(lines)


def _size(size: Any) -> str:
    return f"{size / 1e6:.1f} MB" if isinstance(size, (int, float)) else "? MB"


def _mirror_lines(mirror: dict[str, Any]) -> list[str]:
    """The mirror as `Mirror.info()` reports it: idle / shipping / failing (with the reason)."""
    if not mirror:
        return []
    line = f"mirror: {mirror.get('state', '?')}"
    if mirror.get("state") == "failing":
        failures = mirror.get("failures", "?")
        attempts = "1 failed attempt" if failures == 1 else f"{failures} failed attempts"
        line += f" ({attempts}: {mirror.get('reason') or mirror.get('error') or 'unknown'})"
    elif mirror.get("error"):
        line += f" ({mirror['error']})"
    if mirror.get("last_cycle"):
        line += f"; last cycle {mirror['last_cycle']}"
    lines = [line]
    if mirror.get("new_base"):
        lines.append(f"mirror: new base {mirror['new_base']} uploading (WAL keeps shipping meanwhile)")
    if mirror.get("base_error"):
        lines.append(f"mirror: the last new base failed, retrying ({mirror['base_error']})")
    return lines


def _snapshot_line(snapshots: Any, root: str) -> str:
    """The newest restorable state, as `restore.list_generations` describes it (oldest first)."""
    if isinstance(snapshots, dict) and snapshots.get("error"):
        return f"snapshots: unreadable ({snapshots['error']})"
    if not snapshots:
        return f"snapshots: none yet in {root}"
    newest = next((g for g in reversed(snapshots) if g.get("newest")), snapshots[-1])
    when = newest.get("until") or newest.get("created")
    age = f"{_age(time.time() - when)} old" if isinstance(when, (int, float)) else "age unknown"
    count = f"{len(snapshots)} generation{'s' if len(snapshots) != 1 else ''}"
    return (f"snapshots: newest restorable state {age}, {_size(newest.get('size_bytes'))} "
            f"(generation {newest.get('id', '?')}, {count} in {root})")

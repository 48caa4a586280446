"""Where a task attempt's files are on this machine: its datastore folder and card folders.

The names come from the database (the pathspec: flow, run id, step, task id) and the root
from the attempt's `ds-root` metadata, mapped by `datastore.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ..service.http import ApiError
from ..service.inputs import SMALLINT_MAX, PathIds, path_ids
from . import sql
from .context import context
from .datastore import CARDS_DIR
from .query import optional_number


@dataclass(frozen=True)
class TaskFiles:
    flow_id: str
    run_id: str
    step_name: str
    task_id: str  # the task's pathspec id: its external name, else its number
    attempt: int
    root: Path  # the datastore root on this machine

    @property
    def folder(self) -> Path:
        return self.root / self.flow_id / self.run_id / self.step_name / self.task_id

    @property
    def cards_base(self) -> Path:
        return self.root / CARDS_DIR / self.flow_id / "runs" / self.run_id / "steps" / self.step_name / "tasks" / self.task_id


async def locate(request: web.Request) -> TaskFiles:
    """The task the path names, at `?attempt_id=` (default: its latest attempt); 404 if none."""
    ids: PathIds = path_ids(request.match_info)
    ctx = context(request)
    row = await ctx.database.fetchrow(sql.TASK_EXISTS.get(ids.run, ids.task), *ids.params)
    if row is None:
        raise ApiError(404, f"{ids} does not exist")
    attempt = optional_number(request.query, "attempt_id", SMALLINT_MAX)
    if attempt is None:
        attempt = int(await ctx.database.fetchval(sql.LATEST_ATTEMPT.get(ids.run, ids.task), *ids.params))
    recorded = await ctx.database.fetchval(sql.TASK_DS_ROOT.get(ids.run, ids.task), *ids.params, attempt)
    root = ctx.roots.local_root(recorded)
    for name in (ids.flow_id, row[1], ids.step_name or "", row[2]):
        ctx.roots.path(root, name)  # refuses names that could leave their folder
    return TaskFiles(ids.flow_id, row[1], ids.step_name or "", row[2], attempt, root)

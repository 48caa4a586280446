"""Reads a finished run back through the Metaflow Client API and prints a JSON summary.
Run as a separate process: the client's configuration comes from the environment."""

import json
import sys

from metaflow import Flow, Run, Task, namespace


def task_summary(task):
    return {
        "pathspec": task.pathspec,
        "index": task.index,
        "successful": task.successful,
        "finished": task.finished,
        "metadata": {k: v for k, v in task.metadata_dict.items()
                     if k in ("foreach-stack", "foreach-execution-path", "attempt", "origin-run-id", "attempt_ok")},
        "artifacts": sorted(a.id for a in task.artifacts),
        "parents": sorted(t.pathspec for t in task.parent_tasks),
        "children": sorted(t.pathspec for t in task.child_tasks),
        "current_attempt": task.current_attempt,
    }


def main(flow_name, run_id, mode):
    namespace(None)
    run = Run(f"{flow_name}/{run_id}")
    out = {
        "flow_runs": [r.id for r in Flow(flow_name).runs()],
        "successful": run.successful,
        "finished": run.finished,
        "tags": sorted(run.user_tags),
        "system_tags": sorted(run.system_tags),
        "steps": sorted(s.id for s in run.steps()),
        "tasks": {s.id: [task_summary(t) for t in s.tasks()] for s in run.steps()},
    }
    if mode == "linear":
        out["x"] = run["end"].task.data.x
        out["message"] = run["end"].task.data.message
        run.add_tag("added-tag")
        run.add_tags(["t2", "t3"])
        run.remove_tag("t2")
        run.replace_tag("t3", "t4")
        out["tags_after"] = sorted(Run(run.pathspec).user_tags)
        try:
            run.remove_tag(f"user:{run['start'].task.metadata_dict['user']}")
            out["remove_system_tag"] = "allowed"
        except Exception as exc:
            out["remove_system_tag"] = type(exc).__name__
    if mode == "foreach":
        body_tasks = list(run["body"].tasks())
        retried = [t for t in body_tasks if t.current_attempt == 1]
        out["retried"] = [t.pathspec for t in retried]
        if retried:
            task = retried[0]
            first = Task(task.pathspec, attempt=0)
            out["attempt0_artifacts"] = sorted(a.id for a in first.artifacts)
            out["attempt0_partial"] = first["partial"].data
            out["attempt1_attempt_seen"] = task["attempt_seen"].data
            out["latest_has_partial"] = "partial" in task
        out["values"] = run["join"].task.data.values if run["join"].task else None
        if run.successful:
            out["checked"] = run["check"].task.data.checked
    print("READBACK " + json.dumps(out, default=str))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])

"""Real Metaflow flows through the front door of a real stack, read back through the Client API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import free_port
from stack_helpers import Stack, run_id_from

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("flows"), free_port(), free_port())
    stack.up()
    yield stack
    stack.down()


def test_flows_linear_with_parameters_and_tags(stack: Stack) -> None:
    out = stack.run_flow("linear_flow.py", "run", "--alpha", "5", "--label", "p", "--tag", "nightly", "--tag", "team:ml")
    run_id = run_id_from(out.stderr + out.stdout)
    facts = stack.client(f"""
        run = Run("LinearFlow/{run_id}")
        end = run["end"].task
        result = dict(successful=run.successful, finished=run.finished, message=run.data.message,
                      alpha=run["start"].task["alpha"].data, tags=sorted(run.user_tags),
                      steps=sorted(s.id for s in run), metadata=end.metadata_dict,
                      flows=[f.id for f in Metaflow()], latest=Flow("LinearFlow").latest_run.id,
                      parents=[t.pathspec for t in end.parent_tasks],
                      children=[t.pathspec for t in run["start"].task.child_tasks])
    """)
    assert facts["successful"] and facts["finished"]
    assert facts["message"] == "p:10" and facts["alpha"] == 5
    assert {"nightly", "team:ml"} <= set(facts["tags"])
    assert facts["steps"] == ["end", "middle", "start"]
    assert facts["metadata"]["attempt"] == "0" and facts["metadata"]["ds-type"] == "local"
    assert "LinearFlow" in facts["flows"] and facts["latest"] == run_id
    assert len(facts["parents"]) == 1 and "/middle/" in facts["parents"][0]
    assert len(facts["children"]) == 1 and "/middle/" in facts["children"][0]


def test_flows_tag_mutation_through_client(stack: Stack) -> None:
    out = stack.run_flow("linear_flow.py", "run")
    run_id = run_id_from(out.stderr + out.stdout)
    tags = stack.client(f"""
        run = Run("LinearFlow/{run_id}")
        run.add_tag("keep")
        run.add_tags(["a", "b"])
        run.remove_tag("a")
        run.replace_tag("b", "c")
        result = sorted(Run("LinearFlow/{run_id}").user_tags)
    """)
    assert tags == ["c", "keep"]


def test_flows_branch_join(stack: Stack) -> None:
    out = stack.run_flow("branch_flow.py", "run")
    run_id = run_id_from(out.stderr + out.stdout)
    facts = stack.client(f"""
        run = Run("BranchFlow/{run_id}")
        join = run["join"].task
        result = dict(values=join["values"].data, parents=sorted(t.parent.id for t in join.parent_tasks),
                      ok=run.successful)
    """)
    assert facts == {"values": [11, 20], "parents": ["left", "right"], "ok": True}


def test_flows_foreach_of_fifty(stack: Stack) -> None:
    out = stack.run_flow("foreach_flow.py", "run", "--width", "50", "--max-workers", "8")
    run_id = run_id_from(out.stderr + out.stdout)
    facts = stack.client(f"""
        run = Run("ForeachFlow/{run_id}")
        tasks = list(run["square"])
        stacks = sorted(t.metadata_dict.get("foreach-stack", "") != "" for t in tasks)
        result = dict(n=len(tasks), results=run["join"].task["results"].data, ok=run.successful,
                      index=sorted(t.index for t in tasks), stacks=stacks,
                      filtered=len(list(run["square"].tasks())))
    """)
    assert facts["n"] == 50 and facts["ok"]
    assert facts["results"] == [i * i for i in range(50)]
    assert facts["index"] == list(range(50))
    assert all(facts["stacks"])


def test_flows_retry_and_catch(stack: Stack) -> None:
    out = stack.run_flow("retry_catch_flow.py", "run")
    run_id = run_id_from(out.stderr + out.stdout)
    facts = stack.client(f"""
        run = Run("RetryCatchFlow/{run_id}")
        flaky = run["flaky"].task
        first = Task(flaky.pathspec, attempt=0)
        second = Task(flaky.pathspec, attempt=1)
        result = dict(ok=run.successful, latest_attempt=flaky.current_attempt,
                      seen=flaky["attempt_seen"].data, second_seen=second["attempt_seen"].data,
                      first_has_seen="attempt_seen" in first, first_ok=first.successful,
                      caught=run["end"].task["caught"].data, attempt_ok=flaky.metadata_dict.get("attempt_ok"))
    """)
    assert facts["ok"] and facts["latest_attempt"] == 1
    assert facts["seen"] == 1 and facts["second_seen"] == 1
    assert facts["first_ok"] is False
    assert facts["caught"] is True


def test_flows_failed_run_then_resume(stack: Stack) -> None:
    failed = stack.run_flow("resumable_flow.py", "run", check=False)
    assert failed.returncode != 0
    failed_id = run_id_from(failed.stderr + failed.stdout)
    state = stack.client(f"""
        run = Run("ResumableFlow/{failed_id}")
        result = dict(ok=run.successful, finished=run.finished, fragile_ok=run["fragile"].task.successful)
    """)
    assert state == {"ok": False, "finished": False, "fragile_ok": False}
    resumed = stack.run_flow("resumable_flow.py", "resume", "--origin-run-id", failed_id, env={"RESUMABLE_FLOW_OK": "1"})
    resumed_id = run_id_from(resumed.stderr + resumed.stdout)
    assert resumed_id != failed_id
    facts = stack.client(f"""
        run = Run("ResumableFlow/{resumed_id}")
        result = dict(ok=run.successful, value=run.data.result,
                      origin=run["start"].task.metadata_dict.get("origin-run-id"))
    """)
    assert facts == {"ok": True, "value": 42, "origin": failed_id}

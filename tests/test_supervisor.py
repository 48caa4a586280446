"""The supervisor's state machine, edge by edge: a fake component and a fake clock, no processes.

Real processes cannot reach these edges deterministically (a start that raises three times in a
row, a component that stays up exactly long enough); the real-process tests are test_lifecycle.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import make_settings, wait_until

from mfcolab.supervisor.component import Component
from mfcolab.errors import ComponentError
from mfcolab.settings import Settings
from mfcolab.supervisor.states import ALLOWED_MOVES, State, TransitionError
from mfcolab.supervisor.status import StackStatus
from mfcolab.supervisor.loop import BACKOFF_MAX, STABLE_AFTER, Slot, Supervisor


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeComponent(Component):
    """Does what the test says: `start()` raises while `start_error` is set, `alive` and `healthy` are flags."""

    def __init__(self, name: str = "fake", *, essential: bool = True, restart_limit: int | None = 3,
                 start_timeout: float = 30.0) -> None:
        self.name = name
        self.essential = essential
        self.restart_limit = restart_limit
        self.start_timeout = start_timeout
        self.start_error: ComponentError | None = None
        self.is_alive = False
        self.is_healthy = False
        self.starts = 0
        self.stops = 0

    def start(self) -> None:
        self.starts += 1
        if self.start_error is not None:
            raise self.start_error
        self.is_alive = True

    def healthy(self) -> bool:
        return self.is_alive and self.is_healthy

    def alive(self) -> bool:
        return self.is_alive

    def stop(self, timeout: float) -> None:
        self.stops += 1
        self.is_alive = self.is_healthy = False

    def die(self) -> None:
        self.is_alive = self.is_healthy = False


def running_slot(component: FakeComponent, clock: FakeClock) -> Slot:
    slot = Slot(component, clock)
    slot.move(State.STARTING)
    component.start()
    component.is_healthy = True
    slot.step()
    assert slot.state == State.RUNNING
    return slot


def wait_out_backoff(slot: Slot, clock: FakeClock) -> None:
    clock.now = slot.backoff.retry_at


def test_slot_step_running_dies_backoff_then_fatal_after_restart_limit() -> None:
    clock, component = FakeClock(), FakeComponent(restart_limit=3)
    slot = running_slot(component, clock)
    for attempt in range(1, 4):
        component.die()
        slot.step()
        assert slot.state == State.BACKOFF, attempt
        assert "restarting in" in slot.reason
        wait_out_backoff(slot, clock)
        slot.step()
        assert slot.state == State.STARTING and slot.restarts == attempt
    component.die()
    slot.step()
    assert slot.state == State.FATAL
    assert "failed 4 times in a row" in slot.reason
    clock.advance(3600)
    slot.step()
    assert slot.state == State.FATAL and component.starts == 4, "FATAL is never restarted"


def test_slot_step_start_that_keeps_raising_reaches_fatal() -> None:
    clock, component = FakeClock(), FakeComponent(restart_limit=3)
    slot = running_slot(component, clock)
    component.start_error = ComponentError("port 5 is busy", "free it")
    component.die()
    slot.step()  # RUNNING -> BACKOFF: failure 1
    seen = [slot.state]
    for _ in range(10):
        wait_out_backoff(slot, clock)
        slot.step()
        seen.append(slot.state)
        if slot.state == State.FATAL:
            break
    assert seen == [State.BACKOFF, State.BACKOFF, State.BACKOFF, State.FATAL]
    assert "port 5 is busy" in slot.reason
    assert component.starts == 1 + 3


def test_slot_step_start_that_raises_waits_longer_each_time_up_to_the_cap() -> None:
    clock, component = FakeClock(), FakeComponent(restart_limit=None)
    slot = running_slot(component, clock)
    component.start_error = ComponentError("no network", "wait")
    component.die()
    slot.step()
    delays = []
    for _ in range(9):
        delays.append(slot.backoff.retry_at - clock.now)
        clock.advance(delays[-1] - 0.01)
        slot.step()
        assert component.starts == 1 + len(delays) - 1, "no start before the backoff passed"
        clock.advance(0.01)
        slot.step()
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, BACKOFF_MAX, BACKOFF_MAX, BACKOFF_MAX]
    assert slot.state == State.BACKOFF


def test_slot_step_staying_up_resets_the_failure_count() -> None:
    clock, component = FakeClock(), FakeComponent(restart_limit=3)
    slot = running_slot(component, clock)
    for _ in range(3):  # three quick deaths: one more would be FATAL
        component.die()
        slot.step()
        wait_out_backoff(slot, clock)
        slot.step()
        component.is_healthy = True
        slot.step()
        assert slot.state == State.RUNNING
    clock.advance(STABLE_AFTER + 1)
    slot.step()
    assert slot.backoff.failures == 0
    component.die()
    slot.step()
    assert slot.state == State.BACKOFF and slot.backoff.failures == 1


def test_slot_step_starting_timeout_stops_it_and_backs_off() -> None:
    clock, component = FakeClock(), FakeComponent(start_timeout=30.0)
    slot = running_slot(component, clock)
    component.die()
    slot.step()
    wait_out_backoff(slot, clock)
    slot.step()
    assert slot.state == State.STARTING and component.alive() and not component.healthy()
    clock.advance(29)
    slot.step()
    assert slot.state == State.STARTING and component.stops == 0
    clock.advance(2)
    slot.step()
    assert component.stops == 1
    slot.step()
    assert slot.state == State.BACKOFF
    assert "not healthy after 30 s" in slot.reason


def test_slot_move_refuses_what_the_state_machine_does_not_allow() -> None:
    slot = Slot(FakeComponent(), FakeClock())
    with pytest.raises(TransitionError, match="stopped -> running"):
        slot.move(State.RUNNING)
    slot.move(State.STARTING)
    slot.move(State.FATAL)
    with pytest.raises(TransitionError, match="fatal -> starting"):
        slot.move(State.STARTING)
    assert slot.state == State.FATAL
    assert set(ALLOWED_MOVES) == set(State), "every state says where it may go"


def fake_supervisor(tmp_path: Path, *components: Component) -> tuple[Supervisor, Settings]:
    settings = make_settings(tmp_path)
    settings.run_dir.mkdir(parents=True)
    return Supervisor(settings, components=list(components), boot=None, clock=FakeClock()), settings


def test_supervisor_start_and_wait_essential_start_that_raises_is_fatal(tmp_path: Path) -> None:
    component = FakeComponent("db")
    component.start_error = ComponentError("binary missing", "install it")
    supervisor, _ = fake_supervisor(tmp_path, component)
    with pytest.raises(ComponentError, match="binary missing"):
        supervisor.start_and_wait(supervisor.slots[0])
    assert supervisor.slots[0].state == State.FATAL


def test_supervisor_start_and_wait_optional_start_that_raises_backs_off(tmp_path: Path) -> None:
    component = FakeComponent("tunnel", essential=False)
    component.start_error = ComponentError("no network", "wait")
    supervisor, _ = fake_supervisor(tmp_path, component)
    supervisor.start_and_wait(supervisor.slots[0])
    slot = supervisor.slots[0]
    assert slot.state == State.BACKOFF and slot.backoff.failures == 1 and "no network" in slot.reason


def test_supervisor_run_writes_a_status_the_readers_understand(tmp_path: Path) -> None:
    component = FakeComponent("thing")
    component.is_healthy = True
    supervisor, settings = fake_supervisor(tmp_path, component)
    stopper = threading.Timer(0.5, supervisor.stop)
    stopper.start()
    assert supervisor.run() == 0
    status = StackStatus.read(settings.status_file)
    assert status is not None and status.phase == "stopped"
    assert [(c.name, c.state) for c in status.components] == [("thing", "stopped")]


def run_until_stopped(supervisor: Supervisor, while_running: Callable[[], None]) -> int:
    """`supervisor.run()` in this thread (it installs signal handlers); `while_running` in another
    once every slot is RUNNING. A bounded stop ends a run that would not end by itself."""
    def act() -> None:
        wait_until(lambda: all(s.state == State.RUNNING for s in supervisor.slots), timeout=60, what="the stack to run")
        while_running()

    actor = threading.Thread(target=act, daemon=True)
    bound = threading.Timer(60, supervisor.stop)
    actor.start()
    bound.start()
    try:
        return supervisor.run()
    finally:
        bound.cancel()
        actor.join(60)


def test_supervisor_run_essential_component_fatal_while_running_shuts_the_stack_down(tmp_path: Path) -> None:
    db = FakeComponent("db", restart_limit=0)
    web = FakeComponent("web")
    db.is_healthy = web.is_healthy = True
    supervisor, settings = fake_supervisor(tmp_path, db, web)

    assert run_until_stopped(supervisor, db.die) == 1

    assert supervisor.slots[0].state == State.STOPPED and web.stops == 1 and not web.alive()
    status = StackStatus.read(settings.status_file)
    assert status is not None and status.phase == "stopped"
    assert "db stopped for good" in status.error and "failed 1 times in a row" in status.error


def test_supervisor_run_optional_component_fatal_while_running_keeps_the_stack_up(tmp_path: Path) -> None:
    web = FakeComponent("web")
    tunnel = FakeComponent("tunnel", essential=False, restart_limit=0)
    web.is_healthy = tunnel.is_healthy = True
    supervisor, settings = fake_supervisor(tmp_path, web, tunnel)

    def kill_the_tunnel_then_stop() -> None:
        tunnel.die()
        wait_until(lambda: supervisor.slots[1].state == State.FATAL, timeout=60, what="the tunnel to be FATAL")
        wait_until(lambda: (s := StackStatus.read(settings.status_file)) is not None and s.components[1].state == "fatal",
                   timeout=60, what="the status file to show it")
        assert supervisor.slots[0].state == State.RUNNING and web.stops == 0
        supervisor.stop()

    assert run_until_stopped(supervisor, kill_the_tunnel_then_stop) == 0
    status = StackStatus.read(settings.status_file)
    assert status is not None and not status.error

"""A service from an image, run detached under udocker and supervised like any other process.

Stopping kills the whole process group and then whatever still runs in the container: udocker has
no `stop`, and killing only the udocker process leaves proot and the service running.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
from pathlib import Path
from typing import Any

import requests

from ..supervisor.component import ProcessComponent, port_answers, require_free_port
from ..supervisor.process import ManagedProcess
from ..types import Progress
from .images import ImageRef, resolve_image
from .pulls import ProgressCallback, print_progress
from .udocker_client import ContainerSpec, Udocker, kill_container_processes

log = logging.getLogger(__name__)


def container_name(component: str, image: ImageRef) -> str:
    """One container per component and image: a new tag gets a new container, the same one is reused."""
    digest = hashlib.sha256(image.name.encode()).hexdigest()[:10]
    return f"mfcolab-{component}-{digest}"


class ContainerComponent(ProcessComponent):
    """A service from an image, run detached under udocker, supervised like any other process.

    `prepare()` (tools, pull, create) is idempotent and quick once done; `start()` calls it,
    so a restart is just `start()` again. Call `prepare(progress)` up front to show a first pull.
    """

    start_timeout = 300.0  # the first start of a Python service under proot imports a lot
    stop_timeout = 15.0

    def __init__(self, spec: ContainerSpec, udocker: Udocker, log_dir: Path, *, registry: str = "") -> None:
        super().__init__(spec.name, log_dir)
        self.spec = spec
        self.udocker = udocker
        self.image = resolve_image(spec.image, registry)
        self.container = container_name(spec.name, self.image)
        self._container_dir: Path | None = None
        self.session = requests.Session()

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def container_dir(self) -> Path | None:
        return self._container_dir or self.udocker.container_dir(self.container)

    def prepare(self, progress: ProgressCallback | None = None) -> Path:
        """Tools installed, image pulled, container created; returns the container's folder."""
        self.udocker.ensure_tools()
        if self.udocker.container_dir(self.container) is None:
            self.udocker.pull(self.image, progress=progress)
        self._container_dir = self.udocker.create(self.container, self.image)
        return self._container_dir

    def preflight(self) -> None:
        # The containers share the host network: a taken port fails here, before a pull or a start.
        require_free_port(self.spec.port, self.name, self.spec.port_flag)

    def fetch(self, progress: Progress) -> None:
        progress(f"preparing {self.name} from {self.image} (a first pull can take minutes)")
        self.prepare(print_progress())

    def before_spawn(self) -> None:
        existing = self.udocker.container_dir(self.container)
        if existing is not None:  # what a killed run may have left holding the port
            leftovers = kill_container_processes(existing)
            if leftovers:
                log.warning("%s: stopped %d process(es) left from an earlier run: %s", self.name, len(leftovers), leftovers)
        require_free_port(self.spec.port, self.name, self.spec.port_flag)
        self.prepare()
        for volume in self.spec.volumes:
            volume.mkdir(parents=True, exist_ok=True)

    def make_process(self) -> ManagedProcess:
        argv = self.udocker.run_argv(self.container, self.spec)
        return ManagedProcess(self.name, argv, self.log_path, env=self.udocker.env(), user=self.udocker.user)

    def healthy(self) -> bool:
        if not self.alive():
            return False
        if self.spec.health_path is None:
            return port_answers(self.spec.port)
        try:
            answer = self.session.get(f"http://127.0.0.1:{self.spec.port}{self.spec.health_path}", timeout=1)
        except requests.RequestException:
            return False
        return 200 <= answer.status_code < 300

    def stop(self, timeout: float) -> None:
        super().stop(timeout)
        # A containerized process that left the process group (a daemon, a setsid) still goes.
        if self.container_dir is not None:
            kill_container_processes(self.container_dir)

    def info(self) -> dict[str, Any]:
        return {"image": str(self.image), "container": self.container, "udocker_dir": str(self.udocker.home),
                "user": self.udocker.user or pwd.getpwuid(os.geteuid()).pw_name}

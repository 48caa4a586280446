"""The containers: the upstream Metaflow images run under udocker, with no Docker daemon and no root.

An image name and `--registry` resolve to where udocker pulls from (images); udocker_client pulls
it with progress (pulls) and, when a pull fails, asks the registry why (registry); it creates each
container once, and component runs it detached in its own process group under the supervisor.
official gives `--engine official` and `--ui official` their commands and environment. The
containers share the host network, so each service gets its own 127.0.0.1 port through its environment.

Modules:
- component: A service from an image, run detached under udocker and supervised like any other process.
- container_user: The unprivileged system user the upstream containers run as (when mfcolab runs as root).
- datastore_view: What the official UI backend sees of the datastore: a copy it can read and cannot change.
- images: Where an image comes from: `owner/name:tag` and `--registry` resolved for udocker.
- official: The upstream Metaflow images under udocker: `--engine official` and `--ui official`.
- pulls: A pull's progress, from what udocker writes while it pulls; the plain display.
- registry: Why a pull failed, asked of the registry directly (rate limit, missing image, login, unreachable).
- udocker_client: The udocker command line: tools, pulls, containers, and the processes left in one.
"""

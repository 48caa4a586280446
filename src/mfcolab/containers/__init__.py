"""The containers: the upstream Metaflow images run under udocker, with no Docker daemon and no root.

runtime pulls images with progress and clear errors, creates each container once and runs it
detached in its own process group; official gives `--engine official` and `--ui official` their
commands and environment. The containers share the host network, so each service gets its own
127.0.0.1 port through its environment.

Modules:
- container_user: The unprivileged system user the upstream containers run as (when mfcolab runs as root).
- datastore_view: What the official UI backend sees of the datastore: a copy it can read and cannot change.
- official: The upstream Metaflow images under udocker: `--engine official` and `--ui official`.
- runtime: Images and containers under udocker: no Docker daemon, no root privileges needed.
"""

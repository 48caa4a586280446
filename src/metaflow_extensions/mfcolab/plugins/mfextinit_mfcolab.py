"""mfcolab's Metaflow plugins (see docs/heartbeats.md and docs/cards.md).

- `service` metadata provider: heartbeats from a thread of the task (or run) process
  (`service_provider.py`, `heartbeat_thread.py`).
- the local card root: cards in the shared datastore where `get_cards` reads them (`card_root.py`).
- running tasks' output sent by the runtime to the service for the UI (`live_logs.py`, started
  with the run's heartbeat; docs/ui-live.md).

Both act only when the profile written by `mfcolab connect` sets METAFLOW_MFCOLAB_EXTENSION.
"""

from .card_root import install as _install_card_root

METADATA_PROVIDERS_DESC = [("service", ".service_provider.ServiceMetadataProvider")]

_install_card_root()

"""mfcolab's Metaflow settings: the switch that `mfcolab connect` writes into its profile.

`METAFLOW_MFCOLAB_EXTENSION` (profile key or environment variable): "1" turns on in-process
heartbeats and cards in the shared datastore; absent, empty or "0", Metaflow behaves as stock.
"""

from metaflow.metaflow_config_funcs import from_conf

MFCOLAB_EXTENSION = from_conf("MFCOLAB_EXTENSION")  # type: ignore[no-untyped-call]

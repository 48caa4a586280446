"""Cards written where `get_cards` reads them: `<datastore root>/mf.cards` in the shared datastore.

The reader (`metaflow.cards.get_cards`) looks in `<task's ds-root>/mf.cards`. The writer asks
`CardDatastore.get_storage_root("local")`, which finds `<working folder's .metaflow>/mf.cards`
(the GPU runtime's disk, not the shared datastore) when the profile names a datastore root,
and on Metaflow 2.18-2.19 returns nothing at all when `METAFLOW_CARD_LOCALROOT` is set. With
the extension on, the local card root is the flow datastore's root (the task's ds-root) plus
`mf.cards`, which is what stock Metaflow does when no datastore root is configured; an explicit
`METAFLOW_CARD_LOCALROOT` is honoured.
"""

from __future__ import annotations

import os
from typing import Any

from .switch import switched_on, warn_once


def install() -> None:
    """Wrap `CardDatastore.get_storage_root` once; warn and leave it alone if it moved."""
    try:
        from metaflow.plugins.cards.card_datastore import CardDatastore
        from metaflow.plugins.datastores.local_storage import LocalStorage
    except ImportError as exc:
        warn_once(f"cards stay where Metaflow puts them ({exc})")
        return
    stock = CardDatastore.__dict__.get("get_storage_root")
    if not isinstance(stock, classmethod) or getattr(stock.__func__, "_mfcolab", False):
        return
    original = stock.__func__

    def get_storage_root(cls: Any, storage_type: str) -> Any:
        if storage_type == "local" and switched_on():
            root = shared_card_root(LocalStorage)
            if root is not None:
                return root
        return original(cls, storage_type)

    get_storage_root._mfcolab = True  # type: ignore[attr-defined]
    CardDatastore.get_storage_root = classmethod(get_storage_root)  # type: ignore[method-assign,assignment]


def shared_card_root(local_storage: Any) -> str | None:
    from metaflow import metaflow_config

    explicit = getattr(metaflow_config, "CARD_LOCALROOT", None)
    if explicit:
        return str(explicit)
    if not getattr(metaflow_config, "DATASTORE_SYSROOT_LOCAL", None):
        return None  # no datastore root configured: stock Metaflow already uses <ds-root>/mf.cards
    datastore_root = local_storage.get_datastore_root_from_config(lambda *args, **kwargs: None, create_on_absent=False)
    return os.path.join(datastore_root, metaflow_config.CARD_SUFFIX) if datastore_root else None

"""Whether the mfcolab profile asked for the extension, and the one warning when it cannot help."""

from __future__ import annotations

import os
import sys

_OFF = {"", "0", "false", "no", "off"}
# Set once a process has warned, so that the tasks it starts stay quiet about the same thing.
WARNED_VARIABLE = "MFCOLAB_EXTENSION_WARNED"


def switched_on() -> bool:
    from metaflow import metaflow_config

    value = getattr(metaflow_config, "MFCOLAB_EXTENSION", None)
    return value is not None and str(value).strip().lower() not in _OFF


def warn_once(message: str) -> None:
    """One line on stderr for a whole run: the runtime warns, its tasks inherit the marker."""
    if os.environ.get(WARNED_VARIABLE):
        return
    os.environ[WARNED_VARIABLE] = "1"
    print(f"mfcolab: {message}", file=sys.stderr, flush=True)

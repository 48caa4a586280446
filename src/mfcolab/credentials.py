"""Secrets kept in the root folder (so the next runtime finds them) and the published connection.

`<root>/access_key`   the front door's key, generated once
`<root>/db_password`  the Postgres password, generated once (it lives inside the restored database too)
`<root>/connection.json`  what `connect --root` reads: URL, service URL, key, datastore root
All are written atomically (temporary file, then one rename) with mode 0600 from the start.
The metadata service's own database password is derived from the Postgres one (nothing more to keep).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .settings import Settings


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        path.chmod(0o600)  # some mounts (Drive) ignore modes; nothing more we can do there
    except OSError:
        pass


def _load_or_create(path: Path) -> str:
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = ""
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", f"check the permissions of {path.parent}") from exc
    if not value:
        value = secrets.token_urlsafe(32)
        write_private(path, value + "\n")
    return value


def access_key(settings: Settings) -> str:
    return _load_or_create(settings.key_file)


def db_password(settings: Settings) -> str:
    return _load_or_create(settings.db_password_file)


def service_password(settings: Settings) -> str:
    """The password of the role the metadata service connects as (schema.SERVICE_ROLE)."""
    return hmac.new(db_password(settings).encode(), b"mfcolab metadata service", hashlib.sha256).hexdigest()


def connection_record(settings: Settings, url: str, key: str) -> dict[str, Any]:
    url = url.rstrip("/")
    return {
        "url": url,
        "service_url": url + "/metadata",
        "key": key,
        "datastore_root": str(settings.datastore_dir),
    }


def publish_connection(settings: Settings, url: str, key: str) -> dict[str, Any]:
    record = connection_record(settings, url, key)
    write_private(settings.connection_file, json.dumps(record, indent=2) + "\n")
    return record


def read_connection(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / "connection.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{root / 'connection.json'} is unreadable: {exc}", "run `mfcolab up` again on the CPU side") from exc

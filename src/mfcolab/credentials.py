"""Secrets kept in the root folder (so the next runtime finds them) and the published connection.

`<root>/access_key`   the front door's key, generated once
`<root>/db_password`  the Postgres password, generated once (it lives inside the restored database too)
`<root>/connection.json`  what `connect --root` reads: URL, service URL, key, datastore root
`<root>/sessions.json`  the front door's browser sessions (sessions.py)
All are written atomically (temporary file, then one rename) with mode 0600 from the start.
The metadata service's own database password is derived from the Postgres one (nothing more to keep).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sys
from pathlib import Path
from typing import Any

from yarl import URL

from .errors import ConfigError
from .files import write_atomic
from .settings import Settings
from .sharedfile import RefusedFile, read_regular

MAX_SECRET_BYTES = 4096  # a key or password file: one line of 43 characters
MAX_CONNECTION_BYTES = 64 * 1024  # connection.json: four short fields


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600, atomically."""
    write_atomic(path, [text.encode()], mode=0o600)
    try:
        path.chmod(0o600)  # some mounts (Drive) ignore modes; nothing more we can do there
    except OSError:
        pass


def _load_or_create(path: Path) -> str:
    try:
        value = read_regular(path, MAX_SECRET_BYTES).decode().strip()
    except FileNotFoundError:
        value = ""
    except (RefusedFile, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, RefusedFile) else "it is not text"
        raise ConfigError(f"{path} is refused: {reason}",
                          f"replace {path} with a plain text file holding the secret (a copy of it from another machine)") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", f"check the permissions of {path.parent}") from exc
    if not value:
        value = secrets.token_urlsafe(32)
        write_private(path, value + "\n")
    return value


def access_key(settings: Settings) -> str:
    return _load_or_create(settings.key_file)


def rotate_access_key(settings: Settings) -> str:
    """A new access key: written to the key file (a running front door reads it within a second),
    every browser session ended, and connection.json rewritten with it (the relay of
    `connect --watch` follows that file). Returns the new key."""
    from .web.sessions import SessionStore  # not at the top: web.sessions writes through this module

    key = secrets.token_urlsafe(32)
    write_private(settings.key_file, key + "\n")
    SessionStore(settings.sessions_file).clear()
    try:
        record = read_connection(settings.root)
    except ConfigError:
        record = None  # not a record `up` wrote: the next `up` publishes one
    if record is not None:
        publish_connection(settings, record["url"], key)
    return key


def masked(key: str) -> str:
    """The key as it may be printed where it is kept (a notebook's output): its first characters only."""
    return f"{key[:4]}{'*' * 8} ({len(key)} characters; `mfcolab key` prints it)"


def read_key_file(path: str) -> str:
    """A key from a file, or from standard input for "-" (so it stays out of `ps` and shell history)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the key from {path}: {exc}", "give a file holding only the key, or - for stdin") from exc
    key = text.strip()
    if not key or "\n" in key:
        raise ConfigError(f"{'stdin' if path == '-' else path} does not hold one key", "the file holds the key on one line")
    return key


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
    """The record `up` published in <root>/connection.json (None when there is none), checked:
    a small regular file holding an http(s) URL with a host and, if any, a key that is a string."""
    path = root / "connection.json"
    try:
        record: object = json.loads(read_regular(path, MAX_CONNECTION_BYTES))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        raise ConfigError(f"{path} is unreadable: {reason}", "run `mfcolab up` again on the CPU side") from exc
    if not isinstance(record, dict):
        raise ConfigError(f"{path} is not a connection record", "run `mfcolab up` again on the CPU side")
    url, key = record.get("url"), record.get("key")
    if not (isinstance(url, str) and _is_http_url(url)) or not (key is None or isinstance(key, str)):
        raise ConfigError(f"{path} does not name an http(s) URL and a key", "run `mfcolab up` again on the CPU side")
    return record


def _is_http_url(text: str) -> bool:
    try:
        url = URL(text)
    except (ValueError, TypeError):
        return False
    return url.scheme in ("http", "https") and bool(url.host)

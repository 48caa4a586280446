"""The client side: point the Metaflow client on this machine at a running mfcolab service.

`connect --root DIR` reads the URL and key that `up` published in DIR/connection.json;
`connect URL --key K` works without a shared folder. Either way the service is pinged with
the key before a Metaflow config profile is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import requests

from .credentials import read_connection, write_private
from .errors import ConnectError


@dataclass(frozen=True)
class Target:
    url: str  # front door base URL
    key: str | None
    datastore_root: str

    @property
    def service_url(self) -> str:
        return self.url.rstrip("/") + "/metadata"


def find_target(url: str | None, key: str | None, root: Path | None) -> Target:
    if url:
        datastore = root / "datastore" if root else Path.home() / ".mfcolab" / "datastore"
        return Target(url.rstrip("/"), key, str(datastore))
    if root is None:
        raise ConnectError("no service given", "mfcolab connect --root <shared folder>, or mfcolab connect URL --key KEY")
    record = read_connection(root)
    if record is None:
        raise ConnectError(f"no connection.json in {root}: the CPU side has not published a URL there",
                           f"run `mfcolab up --root {root}` on the CPU side, and mount the same folder here")
    # The datastore is the shared folder as mounted on this machine, wherever that is.
    return Target(record["url"], key or record.get("key"), str(root / "datastore"))


def ping(target: Target, timeout: float = 10.0) -> str:
    """Return the service's version; raise ConnectError saying plainly what is wrong."""
    headers = {"x-api-key": target.key} if target.key else {}
    try:
        response = requests.get(target.service_url + "/ping", headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise ConnectError(
            f"{target.url} does not answer ({type(exc).__name__}): the CPU side is down or its tunnel is restarting",
            "check `mfcolab status` on the CPU side; with --root, retry in a few seconds",
        ) from exc
    if response.status_code == 401:
        raise ConnectError(f"{target.url} refused the access key", "use the key printed by `mfcolab up` (or --root)")
    version = response.headers.get("METADATA_SERVICE_VERSION")
    if response.status_code != 200 or not version:
        raise ConnectError(f"{target.service_url}/ping answered {response.status_code}: not a Metaflow metadata service",
                           "check the URL (the front door's base URL, without /metadata)")
    return version


def metaflow_home() -> Path:
    return Path(os.environ.get("METAFLOW_HOME", Path.home() / ".metaflowconfig")).expanduser()


def profile_config(target: Target) -> dict[str, str]:
    config = {
        "METAFLOW_DEFAULT_METADATA": "service",
        "METAFLOW_SERVICE_URL": target.service_url,
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": target.datastore_root,
    }
    if target.key:
        config["METAFLOW_SERVICE_AUTH_KEY"] = target.key
    return config


def write_profile(target: Target, profile: str) -> Path:
    path = metaflow_home() / f"config_{profile}.json"
    Path(target.datastore_root).mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(profile_config(target), indent=2) + "\n")
    return path


def connect(url: str | None, key: str | None, root: Path | None, profile: str) -> tuple[Target, Path, str]:
    target = find_target(url, key, root)
    version = ping(target)
    return target, write_profile(target, profile), version

"""The client side: point the Metaflow client on this machine at a running mfcolab service.

`connect --root DIR` reads the URL and key that `up` published in DIR/connection.json;
`connect URL --key K` works without a shared folder. Either way the service is pinged with
the key before a Metaflow config profile is written.

`connect --root DIR --watch` survives tunnel restarts: it starts the local relay (relay.py),
which follows DIR/connection.json, and writes the profile with the relay's URL, so runs that
are under way keep reaching the service when the public URL changes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import requests

from ..credentials import read_connection, write_private
from ..errors import ConnectError
from . import relay

# With the relay, a tunnel restart shows up as 503s, which the Metaflow client retries with
# sleeps of 1, 2, 4, ... s: 8 attempts ride over about four minutes (the default 5, half a minute).
RELAY_RETRY_COUNT = 8
# Answers from Cloudflare's edge (not from mfcolab) while the tunnel or the service behind it is away.
_EDGE_TROUBLE = {502: "no answer from behind the tunnel", 503: "service unavailable",
                 504: "no answer from behind the tunnel", 530: "no tunnel connected for this hostname"}
# Where Metaflow looks for the user name, in its order; it skips "root", the only user on Colab.
_USER_SOURCES = ("METAFLOW_USER", "SUDO_USER", "USERNAME", "USER")
DEFAULT_USER = "colab"


@dataclass(frozen=True)
class Target:
    url: str  # front door base URL
    key: str | None
    datastore_root: str
    user: str | None = None  # METAFLOW_USER for the profile; None: Metaflow finds a name itself

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
        raise ConnectError(f"{target.url} refused the access key", "use the key `mfcolab key` prints on the CPU side (or --root); after `mfcolab rotate-key`, connect again")
    if response.status_code in _EDGE_TROUBLE:
        raise ConnectError(
            f"{target.url} answered {response.status_code} ({_EDGE_TROUBLE[response.status_code]}): "
            "the CPU side is down or its tunnel is restarting",
            "check `mfcolab status` on the CPU side; with --root, retry in a few seconds",
        )
    version = response.headers.get("METADATA_SERVICE_VERSION")
    if response.status_code != 200 or not version:
        raise ConnectError(f"{target.service_url}/ping answered {response.status_code}: not a Metaflow metadata service",
                           "check the URL (the front door's base URL, without /metadata)")
    return version


def metaflow_home() -> Path:
    return Path(os.environ.get("METAFLOW_HOME", Path.home() / ".metaflowconfig")).expanduser()


def profile_config(target: Target, retry_count: int | None = None) -> dict[str, str]:
    config = {
        "METAFLOW_DEFAULT_METADATA": "service",
        "METAFLOW_SERVICE_URL": target.service_url,
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": target.datastore_root,
        # mfcolab's Metaflow extension: heartbeats without a process per task, cards in the
        # shared datastore (docs/heartbeats.md, docs/cards.md).
        "METAFLOW_MFCOLAB_EXTENSION": "1",
    }
    if target.key:
        config["METAFLOW_SERVICE_AUTH_KEY"] = target.key
    if retry_count is not None:
        config["METAFLOW_SERVICE_RETRY_COUNT"] = str(retry_count)
    if target.user:
        config["METAFLOW_USER"] = target.user
    return config


def profile_user(given: str | None) -> str | None:
    """The user name the profile sets: the one given, else DEFAULT_USER when Metaflow would find
    no usable name in this environment (as root with no SUDO_USER/USERNAME, on every Colab runtime)."""
    if given:
        return given
    if any(os.environ.get(name) not in (None, "", "root") for name in _USER_SOURCES):
        return None
    return DEFAULT_USER


def write_profile(target: Target, profile: str, retry_count: int | None = None) -> Path:
    path = metaflow_home() / f"config_{profile}.json"
    Path(target.datastore_root).mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(profile_config(target, retry_count), indent=2) + "\n")
    return path


def connect(url: str | None, key: str | None, root: Path | None, profile: str,
            user: str | None = None) -> tuple[Target, Path, str]:
    target = dataclasses.replace(find_target(url, key, root), user=profile_user(user))
    version = ping(target)
    return target, write_profile(target, profile), version


@dataclass(frozen=True)
class Watching:
    """What `connect --watch` set up: the public target, the relay in front of it, the profile."""

    public: Target
    local: Target
    profile_path: Path
    version: str
    relay_state: dict[str, object]
    reused: bool


def connect_watching(key: str | None, root: Path | None, profile: str, port: int, folder: Path,
                     user: str | None = None) -> Watching:
    """Check the service, start (or reuse) the relay that follows <root>/connection.json, write the profile."""
    if root is None:
        raise ConnectError("--watch follows the URL the CPU side publishes in a shared folder: --root is needed",
                           "mfcolab connect --root <shared folder> --watch")
    public = find_target(None, key, root)
    ping(public)
    state, reused = relay.start_relay(root.absolute(), port, relay.RelayFolder(folder))
    local = Target(relay.relay_url(port), public.key, public.datastore_root, profile_user(user))
    version = ping(local)
    path = write_profile(local, profile, retry_count=RELAY_RETRY_COUNT)
    return Watching(public, local, path, version, state, reused)


def stop_watching(folder: Path) -> bool:
    return relay.stop_relay(relay.RelayFolder(folder))

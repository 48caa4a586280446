"""A socket that stops reading never holds up the others or the metadata service: a raw client
with a small receive buffer makes 500 subscriptions to a flow's runs and then reads nothing
while runs are created; a second socket gets every run, the metadata service answers, and the
server lets go of the stalled connection (its end is closed, not kept open with the frames the
client never read) while the stalled client still reads nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from test_ws import connect
from ui_helpers import Stack

from helpers import wait_until
from mfcolab.ui.websocket import CLOSE_WAIT, OUTBOX_MAX, SUBSCRIPTIONS_MAX

pytestmark = pytest.mark.slow

FLOW = "StalledReaderFlow"
RUNS = 40  # x 500 subscriptions: twice the frames a stalled socket's outbox holds
RECEIVE_BUFFER = 4096  # the stalled client's kernel buffer: full after a few frames


def create_run(stack: Stack) -> int:
    body = {"user_name": "tester", "tags": [], "system_tags": ["metaflow_version:2.19.39"]}
    resp = requests.post(f"{stack.metadata_url}/flows/{FLOW}/run", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["run_number"])


def client_frame(text: str) -> bytes:
    """A masked text frame, as a client must send it (RFC 6455 §5.2)."""
    payload = text.encode()
    assert len(payload) < 1 << 16
    mask = os.urandom(4)
    size = len(payload)
    length = bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + struct.pack("!H", size)
    return b"\x81" + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def stalled_client(stack: Stack) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads: unlike aiohttp's
    client, which keeps reading into its own buffer, it lets the server's sends back up."""
    url = urlsplit(stack.api_url + "/ws")
    assert url.hostname is not None and url.port is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.settimeout(60)
    sock.connect((url.hostname, url.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:  # byte by byte: nothing after the handshake is read
        chunk = sock.recv(1)
        assert chunk, f"the server closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def server_end_is_open(sock: socket.socket) -> bool:
    """Whether this process (the server runs in it) still holds the server's end of `sock`'s
    connection: a TCP row from the server's port to the client's port whose inode is one of its
    file descriptors."""
    client_port, server_port = sock.getsockname()[1], sock.getpeername()[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{server_port:04X}") and fields[2].endswith(f":{client_port:04X}"):
                inodes.add(f"socket:[{fields[9]}]")
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed since listed
            continue
    return bool(inodes & held)


def test_a_socket_that_stops_reading_holds_up_nobody(stack: Stack) -> None:
    assert RUNS * SUBSCRIPTIONS_MAX >= 2 * OUTBOX_MAX
    requests.post(f"{stack.metadata_url}/flows/{FLOW}", json={"user_name": "tester"}, timeout=60)
    stalled = stalled_client(stack)
    try:
        stalled.sendall(b"".join(client_frame(json.dumps({"type": "SUBSCRIBE", "uuid": f"s{number}",
                                                          "resource": f"/flows/{FLOW}/runs"}))
                                 for number in range(SUBSCRIPTIONS_MAX)))
        assert server_end_is_open(stalled)

        async def check_others_are_served() -> None:
            async with connect(stack) as reader:
                await reader.subscribe("r", f"/flows/{FLOW}/runs")
                created: list[int] = []
                for _ in range(RUNS):
                    created.append(await asyncio.to_thread(create_run, stack))
                    ping = await asyncio.to_thread(requests.get, stack.metadata_url + "/ping", timeout=60)
                    assert ping.status_code == 200
                for run_number in created:
                    await reader.until(lambda e, n=run_number: e.get("uuid") == "r" and e["data"]["run_number"] == n,
                                       f"run {run_number} at the reading socket")

        asyncio.run(check_others_are_served())
        wait_until(lambda: not server_end_is_open(stalled), timeout=CLOSE_WAIT + 60,
                   what="the server to let go of the stalled connection")
    finally:
        stalled.close()

"""HTTP + WebSocket test service, run inside the test image (not imported by the tests).

Configured like the upstream services: host, port and path prefix come from its environment,
and which variables depends on the module that calls `serve`. Like upstream, every route is
under PATH_PREFIX only (`/ping` at the root is a 404 when a prefix is set), and `/ping` answers
"pong" with the METADATA_SERVICE_VERSION header the Metaflow client checks.
"""
import os
import socket
import struct
import sys

from aiohttp import WSMsgType, web

PREFIX = os.environ.get("PATH_PREFIX", "").rstrip("/")
VERSION = "2.5.1"  # the pinned upstream release


async def ping(request):
    return web.Response(text="pong", headers={"METADATA_SERVICE_VERSION": VERSION})


async def env(request):
    return web.json_response({"env": dict(os.environ), "cwd": os.getcwd(), "uid": os.getuid(), "argv": sys.argv})


async def read(request):
    try:
        with open(request.query["path"]) as handle:
            return web.Response(text=handle.read())
    except OSError as exc:
        return web.json_response({"error": str(exc)}, status=404)


async def write(request):
    with open(request.query["path"], "w") as handle:
        handle.write(await request.text())
    return web.json_response({"written": request.query["path"]})


async def database(request):
    """Postgres' SSLRequest to the configured database: a Postgres answers one byte, N or S."""
    address = (os.environ["MF_METADATA_DB_HOST"], int(os.environ["MF_METADATA_DB_PORT"]))
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(struct.pack("!ii", 8, 80877103))
        return web.Response(text=sock.recv(1).decode())


async def websocket(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_json({"type": "HELLO", "pid": os.getpid(), "path": request.path_qs})
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str("echo:" + message.data)
    return ws


def serve(host_variable, port_variable):
    app = web.Application()
    for method, path, handler in (("GET", "/ping", ping), ("GET", "/env", env), ("GET", "/read", read),
                                  ("POST", "/write", write), ("GET", "/database", database), ("GET", "/ws", websocket),
                                  # the UI backend's other WebSocket: a search over a run's artifacts
                                  ("GET", "/flows/{flow_id}/runs/{run_number}/search", websocket)):
        app.router.add_route(method, PREFIX + path, handler)
    host = os.environ.get(host_variable, "127.0.0.1")
    port = int(os.environ[port_variable])
    print(f"test service listening on {host}:{port}{PREFIX}", flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


if __name__ == "__main__":
    serve("HOST", "PORT")

"""A stand-in of `google.colab.output` for notebooks run under papermill.

Colab's `serve_kernel_port_as_window(port, path='/', anchor_text=None)` shows a link that opens
https://localhost:PORT/PATH through Colab's port proxy, which reaches the kernel's port on
127.0.0.1. Here the call is recorded as one JSON line in $STANDIN_COLAB_LOG (port, path,
anchor_text, and what GET 127.0.0.1:PORT/PATH answered, as the proxy would have fetched it)
and the link's text is printed.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request


def _fetch(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def serve_kernel_port_as_window(port: int, path: str = "/", anchor_text: str | None = None) -> None:
    record = {"call": "serve_kernel_port_as_window", "port": port, "path": path, "anchor_text": anchor_text,
              "status": _fetch(port, path)}
    with open(os.environ["STANDIN_COLAB_LOG"], "a") as log:
        log.write(json.dumps(record) + "\n")
    print(f"[link] {anchor_text or f'https://localhost:{port}{path}'}")


def serve_kernel_port_as_iframe(port: int, path: str = "/", height: int = 400, cache_in_notebook: bool = False) -> None:
    serve_kernel_port_as_window(port, path)

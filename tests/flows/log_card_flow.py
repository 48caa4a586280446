"""2,000 lines on stdout, some on stderr, a card, and an artifact that probes files when unpickled."""

import os
import sys

from metaflow import FlowSpec, card, current, step
from metaflow.cards import Markdown

LINES = 2000
# Run by whoever unpickles the artifact: reads each path and writes a marker at each target,
# or says why it could not.
PROBE = """
def probe(paths, targets):
    found = []
    for path in paths:
        try:
            with open(path) as handle:
                found.append("read:" + handle.read())
        except Exception as exc:
            found.append("refused:" + type(exc).__name__)
    for target in targets:
        try:
            with open(target, "w") as handle:
                handle.write("written by an unpickled artifact")
            found.append("wrote:" + target)
        except Exception as exc:
            found.append("refused-write:" + type(exc).__name__)
    return " | ".join(found)
"""


class FileProbe:
    """Unpickles into a string: what reading `paths` and writing `targets` gave the process that unpickled it."""

    def __init__(self, paths, targets):
        self.paths = paths
        self.targets = targets

    def __reduce__(self):
        call = f"ns['probe']({self.paths!r}, {self.targets!r})"
        return eval, (f"(lambda ns: (exec({PROBE!r}, ns), {call})[1])({{}})",)


class LogCardFlow(FlowSpec):
    @card(type="blank")
    @step
    def start(self):
        for number in range(LINES):
            print(f"out line {number:04d}")
        for number in range(5):
            print(f"err line {number}", file=sys.stderr)
        current.card.append(Markdown("# card-marker-5e2a"))
        paths = [path for path in os.environ.get("PROBE_PATHS", "").split(os.pathsep) if path]
        targets = [path for path in os.environ.get("PROBE_WRITES", "").split(os.pathsep) if path]
        self.probe = FileProbe(paths, targets)
        self.next(self.end)

    @step
    def end(self):
        print("done")


if __name__ == "__main__":
    LogCardFlow()

import os
import sys

from metaflow import FlowSpec, Parameter, step


class ChattyFlow(FlowSpec):
    """A task with a long log on stdout, some stderr, and a large artifact."""

    lines = Parameter("lines", default=5000)
    big_mb = Parameter("big_mb", default=50)

    @step
    def start(self):
        for number in range(self.lines):
            print(f"stdout line {number}")
        for number in range(3):
            print(f"stderr line {number}", file=sys.stderr)
        self.big = os.urandom(self.big_mb * 1024 * 1024)
        self.small = {"answer": 42, "words": ["a", "b"]}
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    ChattyFlow()

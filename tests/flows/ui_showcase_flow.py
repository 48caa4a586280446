"""What a task page shows: a card, a long stdout log with some stderr, and a 50 MB artifact."""

import os
import sys

from metaflow import FlowSpec, card, current, step
from metaflow.cards import Markdown

LOG_LINES = 5000


class UiShowcaseFlow(FlowSpec):
    @card(type="blank")
    @step
    def start(self):
        current.card.append(Markdown("# Card from UiShowcaseFlow\n\nRendered by the blank card."))
        self.greeting = "hello from the card step"
        self.next(self.chatty)

    @step
    def chatty(self):
        for number in range(1, LOG_LINES + 1):
            print(f"stdout line {number} of {LOG_LINES}")
        for number in range(1, 4):
            print(f"stderr line {number} of 3", file=sys.stderr)
        self.small = {"answer": 42}
        self.big = os.urandom(50 * 1024 * 1024)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    UiShowcaseFlow()

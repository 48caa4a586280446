import os
import time

from metaflow import FlowSpec, card, current, step
from metaflow.cards import Markdown


class LiveCardFlow(FlowSpec):
    """`work` refreshes its runtime card with a counter every second until the file named by
    LIVE_CARD_FLOW_GATE exists, for 10 minutes at most."""

    @step
    def start(self):
        self.next(self.work)

    @card(type="blank", id="progress", refresh_interval=1)
    @step
    def work(self):
        gate = os.environ["LIVE_CARD_FLOW_GATE"]
        counter = Markdown("progress 0")
        current.card["progress"].append(counter)
        current.card["progress"].refresh()
        deadline = time.time() + 600
        number = 0
        while not os.path.exists(gate) and time.time() < deadline:
            number += 1
            counter.update(f"progress {number}")
            current.card["progress"].refresh()
            time.sleep(1)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    LiveCardFlow()

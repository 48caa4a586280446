import os
import time

from metaflow import FlowSpec, step


class BusyFlow(FlowSpec):
    """Spins in pure Python in `spin` (no sleep, no I/O wait) until the file named by
    BUSY_FLOW_GATE exists (at most 10 minutes)."""

    @step
    def start(self):
        self.next(self.spin)

    @step
    def spin(self):
        gate = os.environ["BUSY_FLOW_GATE"]
        deadline = time.time() + 600
        rounds = 0
        while True:
            total = 0
            for i in range(200_000):
                total += i * i
            rounds += 1
            if os.path.exists(gate) or time.time() > deadline:
                break
        self.rounds = rounds
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    BusyFlow()

import os
import time

from metaflow import FlowSpec, step


class GatedFlow(FlowSpec):
    """Waits in `hold` until the file named by GATED_FLOW_GATE exists (at most 10 minutes)."""

    @step
    def start(self):
        self.base = 5
        self.next(self.hold)

    @step
    def hold(self):
        gate = os.environ["GATED_FLOW_GATE"]
        deadline = time.time() + 600
        while not os.path.exists(gate):
            if time.time() > deadline:
                raise RuntimeError(f"{gate} never appeared")
            time.sleep(0.2)
        self.result = self.base * 2
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    GatedFlow()

import os

from metaflow import FlowSpec, step


class ResumableFlow(FlowSpec):
    @step
    def start(self):
        self.base = 7
        self.next(self.fragile)

    @step
    def fragile(self):
        if os.environ.get("RESUMABLE_FLOW_OK") != "1":
            raise RuntimeError("fails until RESUMABLE_FLOW_OK=1")
        self.result = self.base * 6
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    ResumableFlow()

"""A foreach whose tasks take a while, so that something can happen to the service during the run."""

import time

from metaflow import FlowSpec, Parameter, step


class SlowForeachFlow(FlowSpec):
    width = Parameter("width", default=6)
    pause = Parameter("pause", default=2.0)

    @step
    def start(self):
        self.items = list(range(self.width))
        self.next(self.nap, foreach="items")

    @step
    def nap(self):
        time.sleep(self.pause)
        self.result = self.input * 10
        self.next(self.join)

    @step
    def join(self, inputs):
        self.results = sorted(i.result for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    SlowForeachFlow()

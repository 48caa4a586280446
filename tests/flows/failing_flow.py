from metaflow import FlowSpec, step


class FailingFlow(FlowSpec):
    """Fails in its middle step, with no retry: the run is over once that task has failed."""

    @step
    def start(self):
        self.next(self.boom)

    @step
    def boom(self):
        raise RuntimeError("this step fails on purpose")
        self.next(self.end)  # noqa: unreachable, kept for the graph

    @step
    def end(self):
        pass


if __name__ == "__main__":
    FailingFlow()

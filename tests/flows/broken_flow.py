from metaflow import FlowSpec, step


class BrokenFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.fail)

    @step
    def fail(self):
        print("about to fail")
        raise RuntimeError("this step fails on purpose")
        self.next(self.end)  # never reached; the graph needs it

    @step
    def end(self):
        pass


if __name__ == "__main__":
    BrokenFlow()

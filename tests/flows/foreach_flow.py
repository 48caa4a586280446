from metaflow import FlowSpec, Parameter, step


class ForeachFlow(FlowSpec):
    width = Parameter("width", default=50)

    @step
    def start(self):
        self.items = list(range(self.width))
        self.next(self.square, foreach="items")

    @step
    def square(self):
        self.result = self.input * self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        self.results = sorted(i.result for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    ForeachFlow()

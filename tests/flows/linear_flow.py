from metaflow import FlowSpec, Parameter, step


class LinearFlow(FlowSpec):
    alpha = Parameter("alpha", default=3)
    label = Parameter("label", default="plain")

    @step
    def start(self):
        self.numbers = list(range(self.alpha))
        self.next(self.middle)

    @step
    def middle(self):
        self.total = sum(self.numbers)
        self.next(self.end)

    @step
    def end(self):
        self.message = f"{self.label}:{self.total}"


if __name__ == "__main__":
    LinearFlow()

from metaflow import FlowSpec, Parameter, step


class ServiceLinearFlow(FlowSpec):
    greeting = Parameter("greeting", default="hello")

    @step
    def start(self):
        self.x = 1
        self.next(self.middle)

    @step
    def middle(self):
        self.x += 41
        self.message = f"{self.greeting} world"
        self.next(self.end)

    @step
    def end(self):
        self.done = True


if __name__ == "__main__":
    ServiceLinearFlow()

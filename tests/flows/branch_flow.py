from metaflow import FlowSpec, step


class BranchFlow(FlowSpec):
    @step
    def start(self):
        self.seed = 10
        self.next(self.left, self.right)

    @step
    def left(self):
        self.value = self.seed + 1
        self.next(self.join)

    @step
    def right(self):
        self.value = self.seed * 2
        self.next(self.join)

    @step
    def join(self, inputs):
        self.values = sorted(i.value for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    BranchFlow()

import os

from metaflow import FlowSpec, current, retry, step


class ServiceForeachFlow(FlowSpec):
    """A foreach whose second item fails once (retried), then a step that fails while
    MFC_FAIL_CHECK is set, so the run can be resumed."""

    @step
    def start(self):
        self.items = ["a", "b", "c"]
        self.next(self.body, foreach="items")

    @retry(times=1, minutes_between_retries=0)
    @step
    def body(self):
        self.attempt_seen = current.retry_count
        if self.input == "b" and current.retry_count == 0:
            self.partial = "first attempt"
            raise RuntimeError("planned failure on the first attempt")
        self.value = self.input * 2
        self.next(self.join)

    @step
    def join(self, inputs):
        self.values = sorted(i.value for i in inputs)
        self.next(self.check)

    @step
    def check(self):
        if os.environ.get("MFC_FAIL_CHECK"):
            raise RuntimeError("planned failure in check")
        self.checked = True
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    ServiceForeachFlow()

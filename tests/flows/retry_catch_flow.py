from metaflow import FlowSpec, catch, current, retry, step


class RetryCatchFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.flaky)

    @retry(times=2, minutes_between_retries=0)
    @step
    def flaky(self):
        self.attempt_seen = current.retry_count
        if current.retry_count == 0:
            raise RuntimeError("first attempt fails on purpose")
        self.next(self.fragile)

    @catch(var="failure", print_exception=False)
    @step
    def fragile(self):
        raise ValueError("caught on purpose")
        self.next(self.end)  # noqa: unreachable, kept for the graph

    @step
    def end(self):
        self.caught = self.failure is not None


if __name__ == "__main__":
    RetryCatchFlow()

import os
import time

from metaflow import FlowSpec, step


class PrintingFlow(FlowSpec):
    """`talk` prints a numbered line every PRINTING_FLOW_PERIOD seconds (default 0.5) until the
    file named by PRINTING_FLOW_GATE exists, for 10 minutes at most."""

    @step
    def start(self):
        self.next(self.talk)

    @step
    def talk(self):
        gate = os.environ["PRINTING_FLOW_GATE"]
        period = float(os.environ.get("PRINTING_FLOW_PERIOD", "0.5"))
        deadline = time.time() + 600
        number = 0
        while not os.path.exists(gate) and time.time() < deadline:
            print(f"line {number} from talk", flush=True)
            number += 1
            time.sleep(period)
        print("talk is done", flush=True)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    PrintingFlow()

from metaflow import FlowSpec, card, current, step
from metaflow.cards import Markdown


class UiCardFlow(FlowSpec):
    @card(type="blank")
    @step
    def start(self):
        current.card.append(Markdown("# Card heading from UiCardFlow"))
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    UiCardFlow()

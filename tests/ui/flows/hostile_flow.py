import os

from metaflow import FlowSpec, step


class Hostile:
    """Unpickling this runs code that tries to read the access key and write outside the
    datastore (paths from the environment of the run that stored it)."""

    def __reduce__(self):
        code = (
            "import pathlib\n"
            f"secret = pathlib.Path({os.environ['HOSTILE_KEY']!r}).read_text()\n"
            f"pathlib.Path({os.environ['HOSTILE_OUT']!r}).write_text(secret)\n"
        )
        return (exec, (code,))


class WriterOnly:
    """Unpickling this only tries to write a file outside the datastore."""

    def __reduce__(self):
        return (exec, (f"open({os.environ['HOSTILE_TMP']!r}, 'w').write('written')",))


class HostileFlow(FlowSpec):
    @step
    def start(self):
        self.hostile = Hostile()
        self.writer = WriterOnly()
        self.plain = "a plain value"
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    HostileFlow()

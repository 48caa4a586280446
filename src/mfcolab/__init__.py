"""mfcolab: a stateful Metaflow metadata service and UI on machines you cannot keep."""

__version__ = "0.1.0"

"""Every error mfcolab raises on purpose, each with the fix in its hint.

    MfcolabError                 base: message + hint, printed as one line by the CLI
    +-- ConfigError              a flag, environment variable or folder is unusable
    +-- PortBusyError            a port we must bind is taken
    +-- MissingBinaryError       a program we need (postgres, rsync, proot, cloudflared) is absent
    +-- StackStateError          the stack is (or is not) running when a command needs the opposite
    +-- ComponentError           a component failed to start or stay up
    +-- SchemaError              the bundled SQL could not be applied
    +-- SnapshotError            the mirror could not write or read a snapshot
    +-- ContainerError           udocker: pull, create or run failed
    +-- TunnelError              cloudflared failed (rate limit, download, no URL)
    +-- ConnectError             the client side could not reach or configure the service
    +-- UiBundleError            the Metaflow UI bundle could not be downloaded, checked or unpacked
"""

from __future__ import annotations


class MfcolabError(Exception):
    """Base class. `hint` says what to do next; `recoverable` marks errors a retry may cure."""

    recoverable = False

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (try: {self.hint})" if self.hint else self.message


class ConfigError(MfcolabError):
    """Raised when a setting, folder or file given by the user cannot be used."""


class PortBusyError(MfcolabError):
    """Raised when a port mfcolab must listen on is already taken."""

    def __init__(self, port: int, what: str, flag: str) -> None:
        super().__init__(f"port {port} for the {what} is already in use", f"free it or pass {flag} PORT")
        self.port = port


class MissingBinaryError(MfcolabError):
    """Raised when an executable mfcolab runs is not installed."""


class StackStateError(MfcolabError):
    """Raised when a command needs the stack up and it is down, or the reverse."""


class ComponentError(MfcolabError):
    """Raised when a component does not become healthy or dies for good."""


class SchemaError(MfcolabError):
    """Raised when the bundled SQL cannot be applied."""


class SnapshotError(MfcolabError):
    """Raised when a snapshot cannot be written, listed or restored."""

    recoverable = True


class ContainerError(MfcolabError):
    """Raised when udocker cannot pull, create or run an image."""


class TunnelError(MfcolabError):
    """Raised when cloudflared cannot be found, downloaded or give a URL."""

    recoverable = True


class ConnectError(MfcolabError):
    """Raised on the client side when the service cannot be reached or configured."""


class UiBundleError(MfcolabError):
    """Raised when the metaflow-ui bundle is missing, unreachable, altered or unsafe to unpack."""

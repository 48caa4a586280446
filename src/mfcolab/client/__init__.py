"""The client side: machines that use a running service rather than run one.

connect points the Metaflow client on this machine at the service named by <root>/connection.json;
relay keeps a local 127.0.0.1 port forwarding to whatever URL that file names now, so a runtime that
restarts with a new public URL does not break the runs that use it.

Modules:
- connect: The client side: point the Metaflow client on this machine at a running mfcolab service.
- relay: The GPU side's local relay: 127.0.0.1:<port> forwards to whatever URL <root>/connection.json names
  now.
"""

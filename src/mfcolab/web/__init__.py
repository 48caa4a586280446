"""The web side: the front door on port 7860, the one authenticated origin of the stack.

The supervisor runs the web process (`python -m mfcolab.web.server`) as a component. Every request
meets the guard first, then the access key or a browser session (auth, sessions); past the door it
reaches the native metadata service, the UI backend or the UI's static files (frontdoor, uibundle).

Modules:
- auth: The access key: who may pass the front door, and the browser login that trades the key for a session.
- frontdoor: The front door on port 7860: one authenticated origin for the metadata service, the UI backend
  and the UI.
- guard: What every request meets before the key is checked, and what every response carries.
- server: The web process: the front door on port 7860, with the native metadata service inside it.
- sessions: Browser sessions of the front door, kept in <root>/sessions.json so they outlive the web process.
- uibundle: The Metaflow UI bundle (the official metaflow-ui release) that the front door serves at `/`.
"""

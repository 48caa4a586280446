"""The web side: the front door on port 7860, the one authenticated origin of the stack.

The supervisor runs the web process (`python -m mfcolab.web.server`) as a component (component).
Every request meets the guard first, then the access key or a browser session (auth, sessions);
past the door it reaches the native metadata service in-process, an upstream service through the
reverse proxy (proxy), or the UI's static files (static, from the bundle uibundle fetches).

Modules:
- auth: The access key: who may pass the front door, and the browser login that trades the key for a session.
- component: The web process as a supervised component: its command line, its health check, its port.
- frontdoor: The front door's assembly: routes to the metadata service, the UI backend and the UI's files.
- guard: What every request meets before the key is checked, and what every response carries.
- proxy: The reverse proxy: HTTP requests and WebSocket sessions forwarded to an upstream (also the relay's).
- server: The web process: the front door on port 7860, with the native metadata service inside it.
- sessions: Browser sessions of the front door, kept in <root>/sessions.json so they outlive the web process.
- static: The Metaflow UI's files at `/`, index.html with the service URL, the client-side routes.
- uibundle: The Metaflow UI bundle (the official metaflow-ui release) that the front door serves at `/`.
"""

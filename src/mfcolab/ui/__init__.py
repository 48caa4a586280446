"""mfcolab's own read-only API for the Metaflow UI (`/api` behind the front door).

Mount it in the front door with the metadata service's pool:

    from mfcolab.service.database import DB_KEY
    from mfcolab.service.livelogs import SPOOL_KEY
    from mfcolab.ui import create_app as create_ui
    service = create_service(dsn)
    front.add_subapp("/api", create_ui(settings, service[DB_KEY], service[SPOOL_KEY]))

or, without a native metadata service, `create_ui(settings, dsn)` (the UI then opens its own
small pool). Authentication is the front door's: nothing in here checks the key.

Modules:
  app           the route table and `create_app`
  context       what the routes share (database, datastore, value reader, settings)
  query         checking query strings; the list grammar (filters, _tags, _order, pages, groups)
  lists         a page of a list resource: one statement, one envelope
  envelope      the `{data, status, links, pages, query}` wrapper, built around Postgres's JSON
  sql           the statements: rows of each resource with derived status and times
  runs, steps, tasks, metadata, artifacts, dag, logs, cards, autocomplete, admin
                one module per resource
  logtail       a growing log read from where the last poll stopped
  websocket     `/ws`: subscriptions in, events out; starts and stops the live pieces
  search        `/search/...`: a run's tasks by an artifact's value or a foreach variable
  live          changes, subscriptions, the hub that reloads and routes them, replay
  notify        the LISTEN connection: trigger payloads to changes
  liveness      a timer per running run and task for heartbeats that go quiet
  taskfiles     where a task attempt's files are on this machine
  datastore     read-only, path-aware access to <root>/datastore (ds-root mapping, no escapes)
  values        artifact values: blob read in place, unpickled by the locked-in worker
  value_worker  the worker program (chroot, unprivileged user, limits)
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]

"""The supervisor: start the stack's components in dependency order, keep them up, stop them in reverse.

`mfcolab up` checks and fetches what the stack needs (stack), then starts `mfcolab serve` detached.
`serve` builds the components in start order (assembly), runs the database's boot sequence around
Postgres (boot: restore, recovery wait, schema, id reservation, mirror) and then the loop, which moves
each component through the states of `states` (RUNNING, BACKOFF, FATAL past the restart limit) on
`backoff`'s schedule. What the loop knows goes into the status file (status); `status`, `down`,
`snapshot` and `logs` read it from another process (control, status_view).

Modules:
- assembly: What a stack is made of for given settings: `build_components(settings)`, in start order.
- backoff: Capped exponential backoff: how many attempts failed in a row and when the next one is due.
- boot: The database's boot and shutdown sequences, in the one order every caller uses.
- component: The lifecycle surface every supervised component offers.
- control: Control of a running stack from another process: find it, stop it, ask it for a snapshot, follow
  its logs.
- loop: `mfcolab serve`: start the stack in dependency order, keep it up, stop it in reverse.
- process: A child process in its own process group, with its output in a log file.
- stack: What the CLI's stack commands do: up, status, serve (control.py: down, snapshot, logs).
- states: The one vocabulary of component states. Depends on nothing but the standard library.
- status: The status file: what the supervisor knows, written for `up`, `status`, `down` and `snapshot`.
- status_view: `mfcolab status` as text: one line per component, then the URL and the snapshots.
"""

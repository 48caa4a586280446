"""The replica: the database shipped to the root folder while it runs, and restored from there before it starts.

A base backup (basebackup) and every completed WAL segment (mirror) are staged in a local outbox,
then made visible in <root>/snapshots/ by one rsync per cycle (transport), in the layout and with
the manifest that `layout` and `manifest` name in one place. Only the stack that started shipping last may
write there (writer); old generations go once nothing needs them (retention). Before Postgres
starts, restore rebuilds the data folder from the newest complete generation, and treats every
file it reads from the shared folder as hostile (walfile).

Modules:
- basebackup: Base backups: pg_basebackup into a local folder, then into the outbox as one generation.
- layout: The snapshot layout in the root folder, named in one place: paths, and file names with their parsers.
- manifest: The manifest: which generations in the root folder are complete, and which WAL was shipped.
- mirror: The mirror: ships a base backup and every completed WAL segment to <root>/snapshots/.
- restore: Restore a database from <root>/snapshots/ before Postgres starts.
- retention: Which generations a root folder keeps, and deleting what none of them needs.
- transport: Make the outbox visible in the root folder: one rsync per mirror cycle.
- walfile: WAL files read from folders someone else can write, checked before they are used.
- writer: Which stack ships to a root folder: the last one to start shipping there.
"""

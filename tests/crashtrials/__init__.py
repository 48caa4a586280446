"""Crash trials: write, SIGKILL everything at a chosen moment, wipe the local folder, restore, check.

    components.py   Postgres and a mirror process driven directly (`ComponentStack`), Metaflow-shaped
                    SQL writes; what the mirror and restore tests use
    realstack.py    the real stack (`mfcolab up`), writes through the front door, every process of
                    the stack killed at once; what test_crash_restore.py runs a few of

`scripts/crash_restore.py` runs either kind many times and prints the figures.
"""

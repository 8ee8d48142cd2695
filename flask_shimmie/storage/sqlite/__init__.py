"""The SQLite engine.

``database.py`` (connections, fork safety, errors, schema), ``events.py``, ``pii.py``,
``locks.py`` (the sidecar lock file).
"""

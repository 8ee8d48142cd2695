"""The PostgreSQL engine.

``database.py`` (URL, pools, fork safety, errors, schema), ``events.py``, ``pii.py``.
"""

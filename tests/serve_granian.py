"""``python -m tests.serve_granian``: the recommended server, serving :func:`tests.serving.songs_app`.

The same granian server as ``python -m example_songs.serve`` (:func:`example_songs.serve.build_server`
with the settings it reads from ``SONGS_BIND``, ``SONGS_WORKERS`` and ``SONGS_HEADER_TIMEOUT``); only
the app factory differs: ``SONGS_TARGET`` (default :data:`tests.serving.GRANIAN_TARGET`), so
that the responses name the worker that answered. :class:`tests.serving.GranianServer` runs it.
"""

from __future__ import annotations

import os
import sys

from example_songs.serve import ServeSettings, build_server
from tests.serving import GRANIAN_TARGET


def main() -> int:
    """Serve until SIGTERM or SIGINT; return the exit code."""
    settings = ServeSettings.from_env(os.environ)
    build_server(settings, target=os.environ.get("SONGS_TARGET") or GRANIAN_TARGET).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

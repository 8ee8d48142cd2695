"""Serve any app factory exactly as ``python -m example_songs.serve`` serves the songs example.

``python -m benchmarks.granian_server benchmarks.bare_app:create_app``, with the
launcher's ``SONGS_BIND`` and ``SONGS_WORKERS``: the HTTP scenario runs the
bare Flask app under the same server and settings as the recommended
deployment, so the two differ only in the app.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from example_songs.serve import ServeSettings, build_server


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the factory named by the one argument until stopped; 2 for a bad command line."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1 or ":" not in args[0]:
        print("usage: python -m benchmarks.granian_server module:factory", file=sys.stderr)
        return 2
    build_server(ServeSettings.from_env(os.environ), target=args[0]).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

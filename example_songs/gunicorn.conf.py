"""gunicorn settings for example_songs: ``gunicorn -c example_songs/gunicorn.conf.py``.

Every worker is a full copy of the app: it opens its own connections after the
fork and follows the store in the background, so any worker answers any request.
"""

import os

wsgi_app = "example_songs:create_app()"
bind = os.environ.get("SONGS_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("SONGS_WORKERS", "3"))
worker_class = "gthread"
threads = int(os.environ.get("SONGS_THREADS", "4"))
# Safe either way: the stack opens no connection before the first request or
# startup(), and a forked worker drops anything inherited and reopens.
preload_app = True
graceful_timeout = 10

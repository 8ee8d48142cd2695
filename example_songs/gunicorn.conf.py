"""gunicorn settings for example_songs: ``gunicorn -c example_songs/gunicorn.conf.py``.

Every worker is a full copy of the app: it opens its own connections after the
fork and follows the store in the background, so any worker answers any request.

Not for clients you do not control: gthread's worker threads read the request
headers and body themselves, with no deadline once a first byte is in, so a few
clients that send a byte a second hold every thread and nothing else is answered.
Face the internet with ``python -m example_songs.serve`` (granian: it reads
requests off the application threads and drops a client that has not sent its
headers within ``SONGS_HEADER_TIMEOUT`` seconds), or put a buffering proxy such
as nginx in front of gunicorn.
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

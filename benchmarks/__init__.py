"""flask_shimmie's benchmark suite: side-by-side figures against the ``eventsourcing`` library.

Run ``python -m benchmarks [memory|sqlite|postgres|http|all]`` from the
repository root after ``pip install -e ".[bench]"``; ``--help`` lists the
options, ``benchmarks/README.md`` explains the scenarios and
``benchmarks/RESULTS.md`` holds the latest figures.
"""

from __future__ import annotations

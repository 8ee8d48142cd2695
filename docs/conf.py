"""Sphinx configuration of the flask_shimmie documentation: ``sphinx-build docs docs/_build/html``."""

from __future__ import annotations

import sys
from pathlib import Path

#: The checkout's root, so that autodoc documents this checkout's package.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

project = "flask_shimmie"
author = "flask_shimmie contributors"
copyright = "flask_shimmie contributors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}

#: Every reference must resolve, except to libraries this build has no inventory of (no
#: intersphinx: the build works offline).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(flask|werkzeug|marshmallow|click|blinker|sqlite3|psycopg|contextlib|pytest|_pytest)\..*"),
    (r"py:.*", r"(abc|collections\.abc|typing|datetime|enum|logging|pathlib|types)\..*"),
    # Type variables (``M = TypeVar("M", bound=Model)``) are not documented objects.
    (r"py:class", r"flask_shimmie\.[a-z_.]+\.[A-Z]"),
]

html_theme = "alabaster"
html_title = "flask_shimmie"

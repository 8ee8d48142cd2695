"""The pytest plugin: the ``shimmie`` fixture, built on your own ``app`` fixture.

Registered through the ``pytest11`` entry point when flask_shimmie is
installed; importing it has no side effects.
"""

from __future__ import annotations

import pytest

from .testing import ShimmieTester


@pytest.fixture
def shimmie(request: pytest.FixtureRequest) -> ShimmieTester:
    """A :class:`~flask_shimmie.testing.ShimmieTester` for the test's ``app`` fixture.

    Define ``app`` in your conftest.py (an app factory with test config);
    each test gets a fresh app, so fresh memory stores unless its config
    names another store.
    """
    try:
        app = request.getfixturevalue("app")
    except pytest.FixtureLookupError:
        pytest.fail(
            "The shimmie fixture needs an `app` fixture that returns your Flask app; define one in "
            "conftest.py, e.g. `@pytest.fixture\\ndef app(): return create_app({'TESTING': True})`.",
            pytrace=False,
        )
    return ShimmieTester(app)

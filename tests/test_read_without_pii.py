"""``stack.read_events(with_pii=False)``: the placeholders instead of the PII, erasures still marked."""

from __future__ import annotations

import pytest

from flask_shimmie import ShimmieStack
from tests.pii_backends import PLACEMENTS, AppFactory, Backend

PERSON = {"name": "Ada", "contact": {"email": "ada@example.com", "age": 36, "vip": True}}
PII = ["contact.email", "contact.age", "contact.vip"]


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_reading_without_pii_gives_the_anonymised_values_and_marks_erasures(
    pii_backend: Backend, make_pii_app: AppFactory, placement: str
) -> None:
    stack = ShimmieStack()
    app = make_pii_app(stack, **pii_backend.config(placement))
    with app.app_context():
        stack.record_unchecked_event("p1", "REGISTERED", PERSON, pii_fields=PII)
        stack.record_unchecked_event("p2", "REGISTERED", PERSON, pii_fields=PII)
        stack.erase_pii("p2")
        withheld, erased, _erasure = stack.read_events(with_pii=False)
        merged = stack.read_events(stream_ids="p1")[0]
    anonymous = {"name": "Ada", "contact": {"email": "", "age": 0, "vip": False}}
    assert withheld.data == anonymous and not withheld.pii_erased
    assert set(withheld.pii_fields) == set(PII)
    assert erased.data == anonymous and erased.pii_erased
    assert merged.data == PERSON  # the default still merges

"""stable_event_id is computed without a UUID object; the ids must stay those of uuid5 (HQ
dedups on them, and ids already journalled must match a replay's)."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from inventory.events import EVENT_ID_NAMESPACE, stable_event_id

part = st.one_of(st.text(), st.integers(), st.floats(allow_nan=False))


@given(st.lists(part, min_size=1, max_size=6))
def test_stable_event_id_is_uuid5_of_the_parts(parts: list[object]) -> None:
    key = "\x1f".join(str(p) for p in parts)
    assert stable_event_id(*parts) == f"urn:uuid:{uuid.uuid5(EVENT_ID_NAMESPACE, key)}"


def test_a_known_id_is_unchanged() -> None:
    # uuid.uuid5(EVENT_ID_NAMESPACE, "s1\\x1fcount_report\\x1fcnt-1"), as journalled before
    want = "urn:uuid:77759ba9-b919-51b9-8b9b-be196899fe0f"
    assert stable_event_id("s1", "count_report", "cnt-1") == want

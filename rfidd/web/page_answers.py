"""The answers of the staff page's view routes (/api/v1/page): display-ready words, numbers
and dates in the reader's language (see rfidd.web.answers)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response
from pydantic import Field

from rfidd.ops.answers import ReplenishmentLine
from rfidd.web.answers import Answer


class EventStream(Response):
    """Server-sent events: `data:` lines, each a JSON snapshot of the view."""

    media_type = "text/event-stream"


class Svg(Response):
    """An SVG chart."""

    media_type = "image/svg+xml"


class CountRow(Answer):
    session_id: str = Field(description="The count's id.")
    status: str = Field(description="running, finished or stopped.")
    zones: list[str] = Field(description="Zones counted.")
    started: str = Field(description="When it started, in the reader's language.")


class PageContext(Answer):
    lang: str = Field(description="The language chosen (fr or en).")
    words: dict[str, str] = Field(description="The page's words in that language.")
    site: str = Field(description="The site's name.")
    user: str = Field(description="Who is signed in (name to show).")
    zones: list[str] = Field(description="The site's zones.")
    zone_labels: dict[str, str] = Field(default_factory=dict, description="Each zone's label "
                                        "from the config, where one is set (else its key).")
    counts: list[CountRow] = Field(description="The last 10 counts.")


class ProductLine(Answer):
    epc: str | None = Field(description="The item.")
    name: str = Field(description="Product name (else SKU or GTIN).")
    size: str = Field(description="Size.")
    colour: str = Field(description="Colour.")
    zone: str = Field(description="Its zone (booked zone for missing items).")


class CountView(Answer):
    status: str = Field(description="running, finished or stopped.")
    found: int = Field(description="Expected items found.")
    expected: int = Field(description="Items expected.")
    ratio: float | None = Field(description="found / expected (null when nothing expected).")
    headline: str = Field(description="'found of expected', in words; for a take-over count "
                                      "what it put (or will put) on the books.")
    missing: list[ProductLine] = Field(description="Items not found (yet), with products.")
    missing_total: str = Field(description="How many are missing, formatted.")
    accuracy: str | None = Field(None, description="Accuracy, formatted (finished counts).")
    unexpected: list[ProductLine] | None = Field(None, description="Found, not booked.")


class ReceptionRow(Answer):
    session_id: str = Field(description="The reception's id.")
    status: str = Field(description="open or closed.")
    opened_text: str = Field(description="When it opened, in the reader's language.")


class ReceptionList(Answer):
    receptions: list[ReceptionRow] = Field(description="The last receptions, newest first.")


class ReceptionView(Answer):
    status: str = Field(description="open or closed.")
    session_id: str = Field(description="The reception's id.")
    asn_ids: list[str] = Field(description="The ASNs received against.")
    lines: list[dict[str, Any]] = Field(description="Per product line: expected and received, "
                                                    "with formatted expected_text and "
                                                    "received_text, and the product's size "
                                                    "and colour.")
    missing: int = Field(description="Expected items not read.")
    unexpected: int = Field(description="Items read, not expected.")
    headline: str = Field(description="'received of expected', in words.")


class FoundItem(Answer):
    epc: str = Field(description="The item.")
    name: str | None = Field(description="Product name (else GTIN).")
    size: str = Field(description="Size.")
    colour: str = Field(description="Colour.")
    price: str = Field(description="Price, formatted with its currency.")
    zone: str = Field(description="Where it was last read.")
    state: str | None = Field(description="Its lifecycle state (else disposition).")
    state_text: str = Field(description="That state in the reader's language.")
    disposition: str = Field(description="CBV disposition.")
    last_seen: str = Field(description="Last read, in the reader's language.")
    history: list[dict[str, Any]] = Field(
        description="Its last 10 events, with `when` and `step_text` (the step in words).")


class FindResults(Answer):
    results: list[FoundItem] = Field(description="Items matching the EPC, SKU or name.")


class PageReplenishmentLine(ReplenishmentLine):
    text: str = Field(description="How many to bring out, and what the stockroom and the "
                                  "floor hold, in the reader's language.")


class PageReplenishment(Answer):
    lines: list[PageReplenishmentLine] = Field(description="The pick list (floor minimum 1).")
    not_on_books: str = Field("", description="How many pieces on the shelves the books do "
                              "not hold (not in the list: to check), in words; empty if none.")


class SuspectedLine(Answer):
    epc: str | None = Field(description="The item.")
    name: str = Field(description="Product name.")
    confidence_text: str = Field(description="How sure, formatted as a percentage.")
    since_text: str = Field(description="Suspected since, in the reader's language.")


class PageAlerts(Answer):
    suspected: list[SuspectedLine] = Field(description="Items suspected lost.")

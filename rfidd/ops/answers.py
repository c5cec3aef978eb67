"""The answers of the /api/v1/ops routes (see rfidd.web.answers: the services' dicts as they
are, documented for integrators)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rfidd.web.answers import Answer, CsvText, Progress


class ImportIssueAnswer(Answer):
    source: str | None = Field(None, description="The file (or <api>) the row came from.")
    line: int | None = Field(None, description="The row's line in the file.")
    field: str | None = Field(None, description="The field that is wrong.")
    message: str | None = Field(None, description="What is wrong with it.")
    record: int | None = Field(None, description="The record's index in a JSON list.")


class CatalogImported(Answer):
    imported: int = Field(description="Products added or updated.")
    catalog_size: int = Field(description="Products in the catalog now.")
    errors: list[ImportIssueAnswer] = Field(description="Each rejected row, with its field.")
    error_text: list[str] = Field(description="The same rejections as one line each.")


class Classification(Answer):
    items: dict[str, int] = Field(description="Items seen, by class (ours, unknown_product, "
                                              "foreign...).")
    catalog_size: int = Field(description="Products in the catalog.")
    unknown_gtins: dict[str, int] = Field(description="GTINs read that the catalog lacks, "
                                                      "with their item counts (top 50).")
    rejected_reads: dict[str, float] = Field(description="Reads rejected since start, by kind.")


class AsnImported(Answer):
    new: list[str] = Field(description="ASN ids stored for the first time.")
    identical: list[str] = Field(description="ASN ids already stored, unchanged.")
    conflicts: list[str] = Field(description="ASNs already stored with other content.")
    warnings: list[str] = Field(description="ASNs stored but not received (another site's).")
    errors: list[str] = Field(description="Rejected rows, one line each (file, line, field).")
    reception: str | None = Field(None, description="The reception opened or joined, if asked.")


class AsnSummary(Answer):
    asn_id: str = Field(description="The ASN's id.")
    origin: str | None = Field(description="Who shipped it.")
    destination: str | None = Field(description="The site it is for.")
    shipped_at: Any = Field(description="When it was shipped.")
    expected_items: int = Field(description="Items it lists.")
    imported_at: float = Field(description="When it was imported (epoch s).")
    source: str | None = Field(description="The file or channel it came from.")
    session_id: str | None = Field(description="The reception that received it, if any.")
    content_hash: str | None = Field(description="Hash of its content (re-imports compare it).")


class ReceptionStatus(Answer):
    session_id: str = Field(description="The reception's id.")
    status: str = Field(description="open or closed.")
    opened_by: str | None = Field(None, description="Who opened it.")
    opened_at: float | None = Field(None, description="When (epoch s).")
    closed_at: float | None = Field(None, description="When it was closed (epoch s).")
    asn_ids: list[str] | None = Field(None, description="The ASNs received against.")
    progress: Progress | None = Field(None, description="Live progress (open sessions).")
    totals: dict[str, Any] | None = Field(None, description="Final totals (closed sessions).")
    report: dict[str, Any] | None = Field(None, description="The report: lines by product, "
                                                            "missing and unexpected items.")


class ReceptionReport(Answer):
    """The closed reception's report, as sent to HQ on .../reports/reception."""

    type: str | None = Field(None, description="Always 'reception'.")
    session_id: str | None = Field(None, description="The reception's id.")
    totals: dict[str, Any] | None = Field(None, description="Expected, received, missing, "
                                                            "unexpected.")
    lines: list[dict[str, Any]] | None = Field(None, description="Per product line.")
    missing: list[dict[str, Any]] | None = Field(None, description="Expected, never read.")
    unexpected: list[dict[str, Any]] | None = Field(None, description="Read, not expected.")


class CountStatus(Answer):
    session_id: str = Field(description="The count's id.")
    status: str = Field(description="running, finished or stopped.")
    zones: list[str] | None = Field(None, description="Zones counted.")
    trigger: str | None = Field(None, description="staff, schedule or recount.")
    adopt: bool | None = Field(None, description="A take-over count (adopts unknown stock).")
    taken_over: int | None = Field(None, description="A take-over count's items put on the "
                                                     "books (running: found so far to put).")
    recount_of: str | None = Field(None, description="The count this one recounts.")
    started_at: float | None = Field(None, description="When (epoch s).")
    ends_at: float | None = Field(None, description="When it stops by itself (epoch s).")
    finished_at: float | None = Field(None, description="When it finished (epoch s).")
    expected: int | None = Field(None, description="Items expected.")
    record_accuracy: float | None = Field(None, description="Found / expected, 0..1.")
    progress: Progress | None = Field(None, description="Live progress (running counts).")
    totals: dict[str, Any] | None = Field(None, description="Final totals (finished counts).")
    report: dict[str, Any] | None = Field(None, description="The report: found, missing, "
                                                            "misplaced, unexpected, accuracy.")
    pass_: dict[str, Any] | None = Field(None, alias="pass",
                                         description="The handheld pass just merged.")


class CountReport(Answer):
    """The finished count's report, as sent to HQ on .../reports/count."""

    type: str | None = Field(None, description="Always 'count'.")
    session_id: str | None = Field(None, description="The count's id.")
    zones: list[str] | None = Field(None, description="Zones counted.")
    totals: dict[str, Any] | None = Field(None, description="Expected, found, missing, ...")
    missing: list[dict[str, Any]] | None = Field(None, description="Booked, not found.")
    misplaced: list[dict[str, Any]] | None = Field(None, description="Found in another zone.")
    unexpected: list[dict[str, Any]] | None = Field(None, description="Found, not booked.")


class Schedule(Answer):
    id: int = Field(description="The schedule's number.")
    cron: str = Field(description="Crontab expression (site time zone).")
    zones: list[str] = Field(description="Zones counted.")
    duration_s: float = Field(description="Length of each count.")
    created_at: float = Field(description="When it was added (epoch s).")
    misfire_grace_s: float = Field(description="A missed run still starts this late, once.")
    next_run: str | None = Field(description="Next run (ISO 8601), null if not scheduled.")
    last_run: str | None = Field(description="Last run (ISO 8601), null if never.")
    active: bool | None = Field(None, description="The scheduler runs it (daemon running).")


class Deleted(Answer):
    deleted: int = Field(description="The schedule deleted.")


class Job(Answer):
    job: str = Field(description="The job's id.")
    what: str = Field(description="What it does.")
    cron: str | None = Field(description="When it runs (crontab expression).")
    misfire_grace_s: float | None = Field(description="A missed run still starts this late.")
    next_run: str | None = Field(description="Next run (ISO 8601).")
    last_run: str | None = Field(description="Last run (ISO 8601).")


class Shrinkage(Answer):
    """The shrinkage report, as sent to HQ on .../reports/shrinkage."""

    type: str = Field(description="Always 'shrinkage'.")
    version: Any = Field(description="The report format's version.")
    period_start: float = Field(description="Start (epoch s).")
    period_end: float = Field(description="End (epoch s).")
    currency: str | None = Field(description="ISO 4217 code of the values.")
    definitions: dict[str, Any] = Field(description="What each figure means.")
    totals: dict[str, Any] = Field(description="Items and values lost, sold, returned; rates.")
    by_category: dict[str, Any] = Field(description="The totals per product category.")
    by_sku: dict[str, Any] = Field(description="The totals per SKU.")
    by_zone: dict[str, Any] = Field(description="The totals per zone.")
    items: list[dict[str, Any]] = Field(description="Each item counted as lost.")
    cleared_alerts: list[Any] = Field(description="Alerts whose loss was cleared.")


class Suspected(Answer):
    suspected: list[dict[str, Any]] = Field(description="Items suspected lost (epc, zone, "
                                                        "confidence, suspected_at...).")
    read_rates: dict[str, Any] = Field(description="Each zone's read rate (how far a miss "
                                                   "means a loss).")


class ReplenishmentLine(Answer):
    sku: str = Field(description="The product's SKU.")
    size: str = Field(description="Size.")
    colour: str = Field(description="Colour.")
    name: str | None = Field(description="Product name.")
    category: str | None = Field(description="Product category.")
    gtins: list[str] = Field(description="GTINs of this SKU, size and colour.")
    stock_qty: int = Field(description="Pieces in the stockroom.")
    floor_qty: int = Field(description="Pieces on the sales floor.")
    suggested: int = Field(description="Pieces to bring out.")


class Replenishment(Answer):
    lines: list[ReplenishmentLine] = Field(description="The pick list, one line per SKU, "
                                                       "size and colour.")
    not_on_books: list[str] = Field([], description="EPCs read on the shelves that the books "
                                    "do not hold (left out of the list, as a count leaves them "
                                    "out): pieces to check.")


ReceptionAnswer = ReceptionStatus | CsvText
CountAnswer = CountStatus | CsvText
ShrinkageAnswer = Shrinkage | CsvText
ReplenishmentAnswer = Replenishment | CsvText

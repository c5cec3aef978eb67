"""CatalogService: the product catalog of the site (from CSV/JSON files, the API or HQ's
`catalog` command) and the product lookups the other store-operations services make.

Threads: the catalog is replaced as a whole under the domain-state lock (ctx.tracker_lock);
readers take the current object and keep using it, so a lookup never sees half an import.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from inventory.catalog import (
    Catalog,
    ImportIssue,
    ImportResult,
    parse_catalog_csv,
    parse_catalog_json,
    parse_catalog_records,
)
from inventory.epc import EpcClass, EpcClassifier, decode
from rfidd.context import ServiceContext
from rfidd.ops import store
from rfidd.ops.common import OpsError, issues_text
from rfidd.store import repo

log = logging.getLogger("rfidd.ops")


class CatalogService:
    """The site's product catalog; registers the HQ command `catalog`."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._lock = ctx.tracker_lock
        self.catalog = Catalog()
        ctx.register_command("catalog", self.command_catalog)

    def start(self) -> None:
        """Load the stored catalog and tell the ingest which GTINs are ours."""
        with self.ctx.db.session() as s:
            self.catalog = store.load_catalog(s)
        self.ctx.catalog_changed(frozenset(self.catalog))
        log.info("ops: %d products in the catalog", len(self.catalog))

    def stop(self) -> None:
        """Nothing to save: every import is committed when it is made."""

    # -- lookups -----------------------------------------------------------------------------
    @staticmethod
    def gtin_of(epc: str) -> str | None:
        return decode(epc).gtin14

    def record_of(self, epc: str) -> str | None:
        """SKU (or GTIN) of a stock item; None keeps it out of stock figures (not GS1, or a
        GTIN the catalog does not list, once there is a catalog)."""
        return self.record(decode(epc).gtin14)

    def record(self, gtin: str | None) -> str | None:
        """`record_of` for an already decoded GTIN."""
        if gtin is None:
            return None
        p = self.catalog.get(gtin)
        if p is not None:
            return p.sku or gtin
        return None if len(self.catalog) else gtin

    def product(self, epc: str) -> dict[str, Any]:
        """The product fields reports and alerts carry next to an EPC."""
        g = self.gtin_of(epc)
        p = self.catalog.get(g) if g else None
        return {"gtin": g, "sku": p.sku if p else None, "name": p.name if p else None}

    def whereabouts(self, epcs: Sequence[str]) -> dict[str, store.Whereabouts]:
        """Where each item is now, or was last seen (items the books do not know: absent)."""
        if not epcs:
            return {}
        with self.ctx.db.session() as s:
            return store.whereabouts(s, epcs)

    def currency(self) -> str:
        """The catalog's most common currency (EUR without a priced catalog)."""
        cur = Counter(p.currency for p in self.catalog.values() if p.currency)
        return cur.most_common(1)[0][0] if cur else "EUR"

    # -- imports -----------------------------------------------------------------------------
    def import_catalog(self, result: ImportResult) -> dict[str, Any]:
        """Upsert the valid products; the answer lists every rejected row with its field."""
        now = time.time()
        if result.products:
            with self.ctx.transaction() as s:
                repo.upsert_products(s, [p.to_dict() for p in result.products], now)
            with self.ctx.db.session() as s:
                catalog = store.load_catalog(s)
            with self._lock:
                self.catalog = catalog
            self.ctx.catalog_changed(frozenset(catalog))
        return {"imported": len(result.products), "catalog_size": len(self.catalog),
                "errors": [i.to_dict() for i in result.errors],
                "error_text": [str(i) for i in result.errors]}

    def import_catalog_text(self, text: str, fmt: str, source: str) -> dict[str, Any]:
        if fmt == "csv":
            return self.import_catalog(parse_catalog_csv(text, source))
        if fmt == "json":
            return self.import_catalog(parse_catalog_json(text, source))
        raise OpsError(400, f"format: {fmt!r} is not csv or json")

    def command_catalog(self, payload: Any) -> str:
        """HQ `catalog`: a list of products, or {"products": [...]}."""
        records = payload.get("products") if isinstance(payload, dict) else payload
        if not isinstance(records, list):
            raise ValueError("catalog: payload must be a list of products or "
                             "{\"products\": [...]} (field 'products')")
        res = self.import_catalog(parse_catalog_records(records, "cmd/catalog"))
        if res["errors"]:
            raise ValueError(f"catalog: imported {res['imported']} product(s), rejected: "
                             + issues_text([ImportIssue(**e) for e in res["errors"]]))
        return f"imported {res['imported']} product(s)"

    def classification(self) -> dict[str, Any]:
        """How the items this site has seen sort out against the company prefixes and catalog:
        unknown products are counted here and kept out of counts and replenishment."""
        classifier = EpcClassifier(set(self.ctx.config.site.company_prefixes),
                                   set(self.catalog) if len(self.catalog) else None)
        with self.ctx.db.session() as s:
            from sqlalchemy import select

            from rfidd.store.models import Item

            rows = list(s.execute(select(Item.epc, Item.gtin)))
        by_class: Counter[str] = Counter()
        unknown_gtins: Counter[str] = Counter()
        for epc, gtin in rows:
            cls = classifier.classify(decode(epc)) if gtin is None else (
                EpcClass.UNKNOWN_PRODUCT if classifier.catalog_gtins is not None
                and gtin not in classifier.catalog_gtins else EpcClass.OURS)
            by_class[str(cls)] += 1
            if cls is EpcClass.UNKNOWN_PRODUCT and gtin:
                unknown_gtins[gtin] += 1
        rejected: dict[str, float] = {}
        for kind in EpcClass:
            v = self.ctx.metrics.registry.get_sample_value(
                "rfidd_rejected_epcs_total", {"kind": str(kind)})
            if v:
                rejected[str(kind)] = v
        return {"items": dict(sorted(by_class.items())), "catalog_size": len(self.catalog),
                "unknown_gtins": dict(unknown_gtins.most_common(50)),
                "rejected_reads": rejected}


__all__ = ["CatalogService"]

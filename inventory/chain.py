"""Chain-wide stock from HQ's event file: what each store holds, by product.

An item counts in a store's stock when its latest event (by eventTime, the business time) was
recorded by that store with a disposition that keeps it in stock. Sold, in transit, stolen,
reserved, destroyed, returned-before-inspection items are not stock anywhere.
Pure: no I/O; the HQ adapter hands in the latest event of each item.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_SGTIN = re.compile(r"^urn:epc:id:sgtin:(\d+)\.(\d+)\.[^.]+$")

# CBV 2.0 bare words and their URN and Web URI forms.
IN_STOCK = frozenset({"sellable_accessible", "sellable_not_accessible", "available",
                      "active"})


def _short(disposition: str) -> str:
    for prefix in ("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-"):
        if disposition.startswith(prefix):
            return disposition[len(prefix):]
    return disposition


def in_stock(disposition: str | None) -> bool:
    return disposition is not None and _short(disposition) in IN_STOCK


def gtin_of(epc_uri: str) -> str | None:
    """The GTIN-14 of an SGTIN pure-identity URI (urn:epc:id:sgtin:CP.IR.S), else None."""
    m = _SGTIN.match(epc_uri)
    if m is None:
        return None
    prefix, ref = m.groups()
    if len(prefix) + len(ref) != 13:
        return None
    body = ref[0] + prefix + ref[1:]
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def stock_by_site(latest: Iterable[tuple[str, str, str | None]]) -> Counter[tuple[str, str]]:
    """(epc, site, disposition of its latest event) per item -> count per (site, GTIN).

    Items that are not SGTINs (cases, returnable assets) are not product stock."""
    out: Counter[tuple[str, str]] = Counter()
    for epc, site, disposition in latest:
        if not in_stock(disposition):
            continue
        gtin = gtin_of(epc)
        if gtin is not None:
            out[(site, gtin)] += 1
    return out

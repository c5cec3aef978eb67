"""A site's contiguous mark: the highest N with every number 1..N held (or declared skipped).

Moved past every run of numbers a batch completes, by an index range walk from the mark, so
the cost is what it advances, not the size of the table.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select, union_all

from rfidd.hq.skips import skip_ranges_of
from rfidd.hq.store import hq_events, hq_sites

WALK = 1000  # sequence numbers a step of the walk looks at


def advance(conn: Connection, sites: list[str], dialect: str) -> None:
    """Move each site's contiguous mark past every run of numbers now held: an index range
    walk from the mark, so the cost is what it advances, not the size of the table. The
    marks, the declared skips and the walk's first step of all the batch's sites are one
    statement each (a batch holds several sites' messages); the marks are then written
    in site order, as every writer does."""
    if not sites:
        return

    marks = {site: mark for site, mark in conn.execute(
        select(hq_sites.c.site, hq_sites.c.contiguous_seq).where(hq_sites.c.site.in_(sites)))}
    skips = skip_ranges_of(conn, sites)  # declared skipped: nothing to wait for there
    e = hq_events

    def step(site: str, after: int) -> Any:
        return (select(e.c.site, e.c.seq).where(e.c.site == site, e.c.seq > after)
                .order_by(e.c.seq).limit(WALK))

    first: dict[str, list[int]] = {site: [] for site in sites}
    steps = [step(site, int(marks.get(site) or 0)) for site in sites]
    if len(steps) == 1:
        stmt: Any = steps[0]
    else:
        stmt = union_all(*(st.subquery().select() for st in steps))
    for site, seq in conn.execute(stmt):
        first[site].append(seq)
    greatest = func.greatest if dialect == "postgresql" else func.max
    for site in sites:
        start = int(marks.get(site) or 0)
        c = _walk(conn, site, start, sorted(first[site]), skips.get(site, []), step)
        if c > start:
            conn.execute(hq_sites.update().where(hq_sites.c.site == site)  # never backwards
                         .values(contiguous_seq=greatest(hq_sites.c.contiguous_seq, c)))


def _walk(conn: Connection, site: str, c: int, seqs: list[int],
          skips: list[tuple[int, int]], step: Any) -> int:
    """The site's mark after the held numbers `seqs` (the first step's, ascending) and
    whatever further steps and declared skips carry it to."""
    while True:
        for seq in seqs:
            if seq == c + 1:
                c = seq
            elif seq > c + 1:
                break
        else:
            if len(seqs) == WALK:
                seqs = [r[1] for r in conn.execute(step(site, c))]
                continue
        over = max((b for a, b in skips if a <= c + 1 <= b), default=None)
        if over is not None:
            c = over
            seqs = [r[1] for r in conn.execute(step(site, c))]
            continue
        return c


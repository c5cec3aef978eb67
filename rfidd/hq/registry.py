"""The site registry: HQ stores only what registered sites publish (`rfidd hq site add`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from rfidd.hq.store import hq_sites


def register_site(engine: Engine, site: str, name: str | None, now: datetime) -> bool:
    """Register (or rename) a site; True when it was not registered before."""
    dialect = engine.dialect.name
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(hq_sites)
    with engine.begin() as conn:
        before = conn.execute(select(hq_sites.c.registered_at)
                              .where(hq_sites.c.site == site)).first()
        conn.execute(ins.values(site=site).on_conflict_do_nothing())
        values: dict[str, Any] = {"registered_at": func.coalesce(hq_sites.c.registered_at, now)}
        if name is not None:
            values["name"] = name
        conn.execute(hq_sites.update().where(hq_sites.c.site == site).values(**values))
    return before is None or before[0] is None


def registered_sites(engine: Engine) -> dict[str, str | None]:
    """site -> name of every registered site."""
    with engine.connect() as conn:
        rows = conn.execute(select(hq_sites.c.site, hq_sites.c.name)
                            .where(hq_sites.c.registered_at.is_not(None))
                            .order_by(hq_sites.c.site)).all()
    return {r[0]: r[1] for r in rows}


class ForgetError(ValueError):
    """A site that cannot be forgotten as asked: unknown, or registered without force."""

    def __init__(self, message: str, *, unknown: bool) -> None:
        super().__init__(message)
        self.unknown = unknown


def forget_site(engine: Engine, site: str, *, registered_too: bool = False) -> bool:
    """Drop `site` from the registry and the sites list (its row: status, last seen, sequence
    marks, dropped count); its stored events and messages stay, they are the chain's history.
    A registered site is only forgotten with `registered_too` (HQ then stops storing what it
    sends, when it stores registered sites only). True when it was registered."""
    with engine.begin() as conn:
        row = conn.execute(select(hq_sites.c.registered_at)
                           .where(hq_sites.c.site == site).with_for_update()).first()
        if row is None:
            raise ForgetError(f"site {site!r}: HQ has never heard of it", unknown=True)
        registered = row[0] is not None
        if registered and not registered_too:
            raise ForgetError(f"site {site!r} is registered: forgetting it unregisters it "
                              "(give --registered-too / registered_too=true to do so)",
                              unknown=False)
        conn.execute(delete(hq_sites).where(hq_sites.c.site == site))
    return registered

"""The ingest's hot statements, compiled once per dialect and run as DB-API `executemany` with
tuples.

A SQLAlchemy ON CONFLICT construct costs more to build, cache-key and bind row by row than
SQLite takes to run it: the ingest writes every batch with the same few statements, so each is
built once from the table definitions (the schema stays the one truth), compiled to positional
SQL for the dialect, and executed through `Connection.exec_driver_sql` (one `executemany` on
the driver, errors still wrapped as SQLAlchemy's DBAPIError, so the retry logic sees them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ClauseElement

from .models import Event, Item, OutboxMessage, ZonePresence

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

ITEM_COLS = ("epc", "epc_uri", "gtin", "serial", "zone", "biz_step", "disposition",
             "first_seen", "last_seen", "updated")
PRESENCE_COLS = ("epc", "zone", "since", "last_seen", "reader", "antenna", "rssi_dbm")
EVENT_COLS = ("event_id", "event_time", "kind", "action", "biz_step", "disposition", "zone",
              "epc_count", "payload", "created_at", "seq")
OUTBOX_COLS = ("stream", "topic", "payload", "event_id", "created_at", "seq")

_sql: dict[tuple[str, str], str] = {}
_positional: dict[str, Dialect] = {}


def _insert(dialect: str, table: Any) -> sqlite.Insert | postgresql.Insert:
    # The site's own dialect only: an SQLite site never loads the PostgreSQL one (~2 MiB).
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    raise NotImplementedError(f"dialect {dialect} is not supported")


def _items(dialect: str) -> ClauseElement:
    t = Item.__table__
    ins = _insert(dialect, t)
    ex = ins.excluded
    keep = {c: func.coalesce(ex[c], t.c[c])
            for c in ("epc_uri", "gtin", "serial", "zone", "biz_step", "disposition")}
    return ins.on_conflict_do_update(
        index_elements=[t.c.epc],
        set_={
            **keep,
            "first_seen": case(
                (t.c.first_seen.is_(None), ex.first_seen),
                (ex.first_seen < t.c.first_seen, ex.first_seen),
                else_=t.c.first_seen,
            ),
            "last_seen": case(
                (t.c.last_seen.is_(None), ex.last_seen),
                (ex.last_seen > t.c.last_seen, ex.last_seen),
                else_=t.c.last_seen,
            ),
            "updated": ex.updated,
        },
    )


def _presence(dialect: str) -> ClauseElement:
    t = ZonePresence.__table__
    ins = _insert(dialect, t)
    return ins.on_conflict_do_update(index_elements=[t.c.epc],
                                     set_={c: ins.excluded[c] for c in PRESENCE_COLS[1:]})


def _events(dialect: str) -> ClauseElement:
    return _insert(dialect, Event.__table__).on_conflict_do_nothing(index_elements=["event_id"])


def _outbox(dialect: str) -> ClauseElement:
    return _insert(dialect, OutboxMessage.__table__).on_conflict_do_nothing(
        index_elements=["event_id"])


_BUILD: dict[str, tuple[Callable[[str], ClauseElement], tuple[str, ...]]] = {
    "items": (_items, ITEM_COLS),
    "presence": (_presence, PRESENCE_COLS),
    "events": (_events, EVENT_COLS),
    "outbox": (_outbox, OUTBOX_COLS),
}


def _dialect(session: Session) -> Dialect:
    """The session's dialect with a positional paramstyle (psycopg's default is named)."""
    d = session.get_bind().dialect
    if d.positional:
        return d
    p = _positional.get(d.name)
    if p is None:
        make: Any = type(d)  # DefaultDialect takes a paramstyle; the Dialect interface does not
        p = _positional[d.name] = make(paramstyle="format")
    return p


def sql(session: Session, name: str) -> str:
    """The compiled SQL of statement `name`; its parameters are tuples in `_BUILD` order."""
    dialect = _dialect(session)
    key = (dialect.name, name)
    text = _sql.get(key)
    if text is None:
        build, cols = _BUILD[name]
        compiled = build(dialect.name).compile(dialect=dialect, column_keys=list(cols))
        order = tuple(getattr(compiled, "positiontup", None) or ())
        if order != cols:  # the tuples' order is this one
            raise RuntimeError(f"{name}: compiled parameters {order} != {cols}")
        text = _sql[key] = str(compiled)
    return text


def execute_many(session: Session, name: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """One `executemany` of statement `name` in the session's transaction."""
    if rows:
        session.connection().exec_driver_sql(sql(session, name), list(rows))


def placeholder(session: Session) -> str:
    return "?" if _dialect(session).paramstyle == "qmark" else "%s"


def existing_event_ids(session: Session, ids: Sequence[str], chunk: int = 500) -> set[str]:
    """The ids among `ids` that the journal or the outbox already holds: one statement per
    `chunk` ids."""
    found: set[str] = set()
    mark = placeholder(session)
    conn = session.connection()
    for i in range(0, len(ids), chunk):
        part = tuple(ids[i:i + chunk])
        marks = ", ".join([mark] * len(part))
        q = (f"SELECT event_id FROM events WHERE event_id IN ({marks}) UNION ALL "
             f"SELECT event_id FROM outbox WHERE event_id IN ({marks})")
        found.update(r[0] for r in conn.exec_driver_sql(q, part + part) if r[0] is not None)
    return found


def delete_presence(session: Session, epcs: Sequence[str]) -> None:
    """Delete the presence rows of departed items (one executemany)."""
    if epcs:
        q = f"DELETE FROM zone_presence WHERE epc = {placeholder(session)}"
        session.connection().exec_driver_sql(q, [(e,) for e in epcs])

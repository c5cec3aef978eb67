"""The alert messages the lifecycle service sends HQ on `alerts` (stable ids: a repeated bad
command or a re-run check is one alert)."""

from __future__ import annotations

from datetime import UTC, datetime

from inventory.authenticity import TidCheck
from inventory.epc import decode
from inventory.events import stable_event_id
from inventory.lifecycle import ItemState, Transition
from rfidd.lifecycle.models import LifecycleItem
from rfidd.store import repo

ALERT_STREAM = "alert"
ALERT_TOPIC = "alerts"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def rejection(site: str, st: ItemState | None, tr: Transition, text: str, code: str,
              source: str) -> repo.Message:
    payload = {
        "type": "lifecycle_rejected", "site": site, "step": tr.step.value, "epc": tr.epc,
        "epc_uri": decode(tr.epc).epcis_uri, "txn": tr.txn, "reason": code, "message": text,
        "state": st.status.value if st else None, "source": source, "time": _iso(tr.at),
    }
    key = tr.txn if tr.txn else tr.at
    return repo.Message(ALERT_STREAM, ALERT_TOPIC, payload,
                        event_id=stable_event_id(site, "lifecycle-rejection", tr.step.value,
                                                 tr.epc, key))


def unverified_return(site: str, tr: Transition, note: str, source: str) -> repo.Message:
    payload = {"type": "return_unverified", "site": site, "epc": tr.epc,
               "epc_uri": decode(tr.epc).epcis_uri, "txn": tr.txn, "message": note,
               "source": source, "time": _iso(tr.at)}
    return repo.Message(ALERT_STREAM, ALERT_TOPIC, payload,
                        event_id=stable_event_id(site, "return-unverified", tr.epc,
                                                 tr.txn or tr.at))


def hold_expired(site: str, r: LifecycleItem, now: float) -> repo.Message:
    assert r.hold_until is not None
    return repo.Message(ALERT_STREAM, ALERT_TOPIC, {
        "type": "hold_expired", "site": site, "epc": r.epc,
        "epc_uri": decode(r.epc).epcis_uri, "client": r.hold_client, "staff": r.hold_staff,
        "until": _iso(r.hold_until), "for_site": r.hold_for_site, "time": _iso(now),
    }, event_id=stable_event_id(site, "hold-expired", r.epc, r.hold_until))


def loan_overdue(site: str, r: LifecycleItem, now: float) -> repo.Message:
    assert r.loan_due is not None
    return repo.Message(ALERT_STREAM, ALERT_TOPIC, {
        "type": "loan_overdue", "site": site, "epc": r.epc,
        "epc_uri": decode(r.epc).epcis_uri, "due": _iso(r.loan_due),
        "overdue_days": round((now - r.loan_due) / 86400, 2),
        "since": _iso(r.since), "time": _iso(now),
    }, event_id=stable_event_id(site, "loan-overdue", r.epc, r.loan_due))


def cloned_tag(site: str, chk: TidCheck, point: str, at: float, *, step: str | None = None,
               txn: str | None = None, zone: str | None = None, source: str | None = None,
               refused: bool = False) -> repo.Message:
    """A cloned EPC: the chip read now is not the one bound at commissioning. One alert per
    (EPC, point, transaction or time): a repeated command is the same alert."""
    payload = {"type": "cloned_tag", "site": site, "epc": chk.epc,
               "epc_uri": decode(chk.epc).epcis_uri, "point": point, "step": step,
               "txn": txn, "zone": zone, "bound_tid": chk.bound, "read_tids": list(chk.seen),
               "refused": refused, "message": chk.reason(), "source": source,
               "time": _iso(at)}
    return repo.Message(ALERT_STREAM, ALERT_TOPIC, payload,
                        event_id=stable_event_id(site, "cloned-tag", point, chk.epc,
                                                 txn if txn else at))

"""Query subscriptions over real sockets: a real site daemon publishes through the real broker
to the real HQ daemon (PostgreSQL); a webhook receiver (a local HTTP server) and a WebSocket
client (the `websockets` package) get every matching event exactly once; a receiver that hangs
or fails delays neither storage nor the other subscribers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import websockets
from sqlalchemy import func, select
from test_hq_epcis_api import Client
from test_hq_gaps import journal, site_daemon
from waits import wait_until

from rfidd.hq import tokens
from rfidd.hq.app import HqDaemon
from rfidd.hq.config import parse_hq_config
from rfidd.hq.registry import register_site
from rfidd.hq.store import hq_events

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook destination: records each POST (body, signature); `mode` hang or fail."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.posts: list[tuple[bytes, str | None]] = []
        self.attempts = 0
        self.release = threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                if outer.mode == "hang":
                    outer.release.wait(30)
                if outer.mode == "fail":
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.posts.append((body, self.headers.get("GS1-Signature")))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/epcis-callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def event_ids(self) -> list[str]:
        return [e["eventID"] for body, _ in self.posts
                for e in json.loads(body)["epcisBody"]["queryResults"]["resultsBody"]
                ["eventList"]]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def hq_toml(prefix: str, broker: Any, db_url: str, tag: str) -> str:
    return (f'[database]\nurl = "{db_url}"\nbatch_max_ms = 20\n'
            f'[mqtt]\nurl = "mqtt://{broker.host}:{broker.port}"\ntopic_prefix = "{prefix}"\n'
            f'client_id = "hq-{tag}"\nsession_expiry_s = 300\nrelay_asns = false\n'
            'share_group = ""\n'
            '[epcis]\nport = 0\nwebhook_attempts = 3\nwebhook_retry_max_s = 0.05\n')


@pytest.fixture
def hq(mqtt5_broker: Any, postgres_url: str, tmp_path: Path) -> Iterator[tuple[HqDaemon, str]]:
    tag = uuid.uuid4().hex[:8]
    prefix = f"sub-{tag}/rfidd/v1"
    daemon = HqDaemon(parse_hq_config(hq_toml(prefix, mqtt5_broker, postgres_url, tag)))
    daemon.start()
    assert daemon.hub is not None
    daemon.hub._worker_args["retry_min_s"] = 0.01  # timing constants patchable to 0
    try:
        assert daemon.store is not None and daemon.consumer is not None
        register_site(daemon.store.engine, "st", "Store", datetime.now(UTC))
        assert daemon.consumer.wait_subscribed(10)
        yield daemon, prefix
    finally:
        daemon.stop()


def stored(daemon: HqDaemon) -> int:
    assert daemon.store is not None
    with daemon.store.engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(hq_events)).scalar_one())


def test_webhooks_and_websocket_get_each_published_event_once(
        hq: tuple[HqDaemon, str], mqtt5_broker: Any, tmp_path: Path) -> None:
    daemon, prefix = hq
    assert daemon.store is not None and daemon.epcis is not None
    read = tokens.create(daemon.store.engine, "bi-tool", "read", datetime.now(UTC))
    other = tokens.create(daemon.store.engine, "other", "read", datetime.now(UTC))
    api = Client(daemon.epcis.port, read)
    assert api.call("POST", "/queries", {"name": "stocking",
                                         "query": {"EQ_bizStep": "storing"}})[0] == 201
    good, hang, fail = Receiver(), Receiver("hang"), Receiver("fail")
    try:
        status, headers, body = api.call("POST", "/queries/stocking/subscriptions", {
            "dest": good.url, "signatureToken": "s3cret-of-the-client", "stream": True})
        assert status == 201 and headers["Location"].endswith(body["subscriptionID"])
        assert "signatureToken" not in body and "secret" not in json.dumps(body)
        for r in (hang, fail):
            assert api.call("POST", "/queries/stocking/subscriptions",
                            {"dest": r.url, "stream": True})[0] == 201
        # Listed to its owner only; the secret is never shown again.
        mine = api.call("GET", "/queries/stocking/subscriptions")[2]
        assert len(mine) == 3 and all("s3cret" not in json.dumps(s) for s in mine)
        assert api.call("GET", "/queries/stocking/subscriptions", token=other)[2] == []

        ws_url = f"ws://127.0.0.1:{daemon.epcis.port}/queries/stocking/events?stream=true"
        got_ws: list[str] = []
        ws_ready = threading.Event()

        async def listen(n: int) -> None:
            async with websockets.connect(
                    ws_url, additional_headers={"Authorization": f"Bearer {read}"}) as ws:
                ws_ready.set()
                while len(got_ws) < n:
                    doc = json.loads(await asyncio.wait_for(ws.recv(), 20))
                    got_ws.extend(e["eventID"] for e in doc["epcisBody"]["queryResults"]
                                  ["resultsBody"]["eventList"])
                with pytest.raises(TimeoutError):  # and nothing more (no duplicate)
                    await asyncio.wait_for(ws.recv(), 1.0)

        n = 60
        listener = threading.Thread(target=asyncio.run, args=(listen(n),), daemon=True)
        listener.start()
        assert ws_ready.wait(10)
        wait_until(lambda: any(x.channel == "websocket" for x in daemon.hub.listeners()), 5)

        site = site_daemon("st", 3, prefix, mqtt5_broker, tmp_path)
        try:
            journal(site, "st", n, per_batch=20)
            # Storage is not held up by the hanging receiver: all n stored while it hangs.
            wait_until(lambda: stored(daemon) == n, 30)
            wait_until(lambda: len(good.event_ids()) >= n, 30)
            assert hang.posts == [] and hang.attempts >= 1
        finally:
            site.stop()
        listener.join(30)
        assert sorted(got_ws) == sorted(set(got_ws)) and len(got_ws) == n
        ids = good.event_ids()
        assert len(ids) == n and len(set(ids)) == n and set(ids) == set(got_ws)
        # Each delivery is signed with the client's token over the exact body.
        for raw, sig in good.posts:
            assert sig == "sha256=" + hmac.new(b"s3cret-of-the-client", raw,
                                               hashlib.sha256).hexdigest()
        # The failing receiver was retried, then its documents dropped and counted.
        wait_until(lambda: daemon.hub is not None and daemon.hub.metrics.deliveries.labels(
            "webhook", "dropped")._value.get() >= 1, 10)
        assert fail.attempts >= 3 and fail.posts == []
        sid = body["subscriptionID"]
        wait_until(lambda: "lastNotifiedAt" in api.call(
            "GET", f"/queries/stocking/subscriptions/{sid}")[2], 5)
        assert api.call("DELETE", f"/queries/stocking/subscriptions/{sid}", token=other)[0] \
            == 404
        assert api.call("DELETE", f"/queries/stocking/subscriptions/{sid}")[0] == 204
        assert api.call("GET", f"/queries/stocking/subscriptions/{sid}")[0] == 404
    finally:
        for r in (good, hang, fail):
            r.close()


def test_capture_feeds_subscriptions_and_bad_subscriptions_name_the_field(
        hq: tuple[HqDaemon, str]) -> None:
    from test_hq_epcis_api import document, event, sgtin

    daemon, _ = hq
    assert daemon.store is not None and daemon.epcis is not None
    now = datetime.now(UTC)
    read = Client(daemon.epcis.port, tokens.create(daemon.store.engine, "r", "read", now))
    cap = Client(daemon.epcis.port, tokens.create(daemon.store.engine, "c", "capture", now))
    assert read.call("POST", "/queries", {"name": "sold", "query": {
        "EQ_disposition": "retail_sold"}})[0] == 201
    for body, where in (
            ({"dest": "http://partner.example.com/cb", "stream": True}, "/dest"),
            ({"dest": "https://partner.example.com/cb"}, "/stream"),
            ({"dest": "https://x.example/cb", "stream": True, "schedule": {"hour": "1"}},
             "/stream"),
            ({"dest": "https://x.example/cb", "schedule": {"hour": "25"}}, "/schedule/hour"),
            ({"dest": "https://x.example/cb", "stream": True, "color": 1}, "/color"),
            ({"dest": "https://x.example/cb", "stream": True,
              "initialRecordTime": "yesterday"}, "/initialRecordTime"),
            ({"dest": "https://x.example/cb", "stream": True,
              "initialRecordTime": "2026-01-01T00:00:00"}, "/initialRecordTime")):  # no offset
        status, _, problem = read.call("POST", "/queries/sold/subscriptions", body)
        assert status == 400 and problem["detail"].startswith(where), (body, problem)
    assert read.call("POST", "/queries/nope/subscriptions",
                     {"dest": "https://x.example/cb", "stream": True})[0] == 404
    assert cap.call("POST", "/queries/sold/subscriptions",
                    {"dest": "https://x.example/cb", "stream": True})[0] == 403
    recv = Receiver()
    try:
        assert read.call("POST", "/queries/sold/subscriptions",
                         {"dest": recv.url, "stream": True})[0] == 201
        sold = event([sgtin(9)], now, "retail_selling", "retail_sold")
        kept = event([sgtin(8)], now, "storing", "sellable_accessible")
        assert cap.call("POST", "/capture", document(sold, kept))[0] == 202
        wait_until(lambda: recv.event_ids() == [sold["eventID"]], 10)
        # Deleting the query ends its subscriptions.
        assert read.call("DELETE", "/queries/sold")[0] == 204
        wait_until(lambda: not any(x.query_name == "sold" for x in daemon.hub.listeners()), 5)
    finally:
        recv.close()


def test_websocket_needs_a_read_token_and_valid_controls(hq: tuple[HqDaemon, str]) -> None:
    daemon, _ = hq
    assert daemon.store is not None and daemon.epcis is not None
    read = tokens.create(daemon.store.engine, "r", "read", datetime.now(UTC))
    Client(daemon.epcis.port, read).call("POST", "/queries", {"name": "q", "query": {}})
    base = f"ws://127.0.0.1:{daemon.epcis.port}/queries"

    async def refused(url: str, token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with websockets.connect(url, additional_headers=headers):
                return 101
        except websockets.InvalidStatus as exc:
            return int(exc.response.status_code)

    assert asyncio.run(refused(f"{base}/q/events?stream=true", None)) == 401
    assert asyncio.run(refused(f"{base}/q/events?stream=true", "rfq_wrong")) == 401
    assert asyncio.run(refused(f"{base}/q/events", read)) == 400
    assert asyncio.run(refused(f"{base}/q/events?stream=true&hour=1", read)) == 400
    assert asyncio.run(refused(f"{base}/nope/events?stream=true", read)) == 404
    assert asyncio.run(refused(f"{base}/q/events?stream=true", read)) == 101


def test_scheduled_webhook_reports_each_event_once_and_empty_runs_when_asked(
        hq: tuple[HqDaemon, str]) -> None:
    from test_hq_epcis_api import document, event, sgtin

    daemon, _ = hq
    assert daemon.store is not None and daemon.epcis is not None and daemon.hub is not None
    daemon.hub._settle_s = 0.0
    now = datetime.now(UTC)
    read = Client(daemon.epcis.port, tokens.create(daemon.store.engine, "r", "read", now))
    cap = Client(daemon.epcis.port, tokens.create(daemon.store.engine, "c", "capture", now))
    assert read.call("POST", "/queries", {"name": "all", "query": {}})[0] == 201
    recv = Receiver()
    try:
        status, _, body = read.call("POST", "/queries/all/subscriptions", {
            "dest": recv.url, "reportIfEmpty": True, "schedule": {"second": "[0-59]"}})
        assert status == 201 and body["schedule"] == {"second": "[0-59]"}
        assert "stream" not in body and body["reportIfEmpty"] is True
        wait_until(lambda: len(recv.posts) >= 1, 10)  # an empty run, reported as asked
        assert json.loads(recv.posts[0][0])["epcisBody"]["queryResults"]["subscriptionID"] \
            == body["subscriptionID"]
        evs = [event([sgtin(20 + i)], now, "storing", "sellable_accessible") for i in range(5)]
        assert cap.call("POST", "/capture", document(*evs[:3]))[0] == 202
        wait_until(lambda: len(recv.event_ids()) >= 3, 10)
        assert cap.call("POST", "/capture", document(*evs[3:]))[0] == 202
        wait_until(lambda: len(recv.event_ids()) >= 5, 10)
        n = len(recv.posts)
        wait_until(lambda: len(recv.posts) >= n + 2, 10)  # later runs: nothing new, no repeat
        assert sorted(recv.event_ids()) == sorted(e["eventID"] for e in evs)
    finally:
        recv.close()


def test_initial_record_time_replays_then_streams_and_a_restart_resumes(
        hq: tuple[HqDaemon, str]) -> None:
    """initialRecordTime: the stored events recorded since then first, then the live ones;
    the stream's position is saved, so a hub started again (a restart) sends what the stopped
    one had queued in memory and never sent, and nothing from before its position."""
    from prometheus_client import CollectorRegistry
    from test_hq_epcis_api import document, event, sgtin

    from rfidd.hq.subscriptions import SubscriptionHub

    daemon, _ = hq
    assert daemon.store is not None and daemon.epcis is not None and daemon.hub is not None
    daemon.hub._settle_s = 0.0
    before = datetime.now(UTC)
    read = Client(daemon.epcis.port, tokens.create(daemon.store.engine, "r", "read", before))
    cap = Client(daemon.epcis.port, tokens.create(daemon.store.engine, "c", "capture", before))
    assert read.call("POST", "/queries", {"name": "sold", "query": {
        "EQ_disposition": "retail_sold"}})[0] == 201
    a, b, c = (event([sgtin(60 + i)], before, "retail_selling", "retail_sold")
               for i in range(3))
    other = event([sgtin(69)], before, "storing", "sellable_accessible")
    assert cap.call("POST", "/capture", document(a, other))[0] == 202
    recv = Receiver()
    again: SubscriptionHub | None = None
    try:
        status, _, body = read.call("POST", "/queries/sold/subscriptions", {
            "dest": recv.url, "stream": True,
            "initialRecordTime": before.isoformat().replace("+00:00", "Z")})
        assert status == 201 and body["minRecordTime"].startswith(before.strftime("%Y-%m-%d"))
        wait_until(lambda: recv.event_ids() == [a["eventID"]], "the replay", 10)
        assert cap.call("POST", "/capture", document(b))[0] == 202
        wait_until(lambda: recv.event_ids() == [a["eventID"], b["eventID"]], "live", 10)

        async def socket_replay() -> list[str]:  # a WebSocket replays the same way
            since = before.isoformat().replace("+00:00", "Z")
            url = (f"ws://127.0.0.1:{daemon.epcis.port}/queries/sold/events?stream=true"
                   f"&initialRecordTime={since}")
            async with websockets.connect(
                    url, additional_headers={"Authorization": f"Bearer {read.token}"}) as ws:
                doc = json.loads(await asyncio.wait_for(ws.recv(), 20))
            return [e["eventID"] for e in doc["epcisBody"]["queryResults"]["resultsBody"]
                    ["eventList"]]

        assert asyncio.run(socket_replay()) == [a["eventID"], b["eventID"]]
        daemon.hub.stop()  # HQ stops: what it is offered now stays in its memory
        assert cap.call("POST", "/capture", document(c))[0] == 202
        n = len(recv.posts)
        again = SubscriptionHub(daemon.store.engine, CollectorRegistry(), settle_s=0.0,
                                tick_s=0.05)
        again.start()
        wait_until(lambda: c["eventID"] in recv.event_ids(), "resumed after restart", 10)
        resent = [e["eventID"] for body_, _ in recv.posts[n:]
                  for e in json.loads(body_)["epcisBody"]["queryResults"]["resultsBody"]
                  ["eventList"]]
        assert a["eventID"] not in resent and other["eventID"] not in recv.event_ids()
        assert resent[-1] == c["eventID"]  # b may come again at the boundary: at least once
    finally:
        if again is not None:
            again.stop()
        recv.close()


def test_a_websocket_too_far_behind_is_closed_and_counted(
        hq: tuple[HqDaemon, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from test_hq_epcis_api import document, event, sgtin

    from rfidd.hq import subscriptions_web

    daemon, _ = hq
    assert daemon.store is not None and daemon.epcis is not None and daemon.hub is not None
    monkeypatch.setattr(subscriptions_web, "WS_QUEUE_MAX", 0)  # any document overflows
    now = datetime.now(UTC)
    read = tokens.create(daemon.store.engine, "r", "read", now)
    cap = Client(daemon.epcis.port, tokens.create(daemon.store.engine, "c", "capture", now))
    Client(daemon.epcis.port, read).call("POST", "/queries", {"name": "q", "query": {}})
    url = f"ws://127.0.0.1:{daemon.epcis.port}/queries/q/events?stream=true"
    dropped = daemon.hub.metrics.deliveries.labels("websocket", "dropped")
    before = dropped._value.get()

    async def listen() -> int:
        async with websockets.connect(
                url, additional_headers={"Authorization": f"Bearer {read}"}) as ws:
            status = await asyncio.to_thread(cap.call, "POST", "/capture", document(
                event([sgtin(40)], now, "storing", "sellable_accessible")))
            assert status[0] == 202
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 20)
            assert closed.value.rcvd is not None
            return int(closed.value.rcvd.code)

    assert asyncio.run(listen()) == 1013
    assert dropped._value.get() == before + 1

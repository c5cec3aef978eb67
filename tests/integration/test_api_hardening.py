"""The local HTTP API under bad requests: clear 4xx answers, no thread held for ever."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import CollectorRegistry

import rfidd.api as api_mod
from rfidd.api import Api

pytestmark = pytest.mark.integration


def _raw(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_bad_lengths_and_stalled_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_mod, "REQUEST_TIMEOUT_S", 0.5)
    api = Api(CollectorRegistry(), "127.0.0.1", 0)
    api.route("POST", "/echo", lambda p, q, b: (200, b))
    api.start()
    try:
        for length in (b"-1", b"abc"):
            out = _raw(api.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + length
                       + b"\r\n\r\n")
            assert out.startswith(b"HTTP/1.0 400") and b"Content-Length" in out
        big = _raw(api.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
        assert big.startswith(b"HTTP/1.0 413")
        # Promises 10 bytes, sends 3, then stalls: the server gives up after its timeout.
        assert _raw(api.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
                    timeout=5.0) == b""
        ok = _raw(api.port, b'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n{"a":1}')
        assert ok.startswith(b"HTTP/1.0 200") and ok.endswith(b'{"a": 1}')
    finally:
        api.stop()

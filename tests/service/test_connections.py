"""Connection handling of a real `mmembed serve`: clients that leave mid-request are not
server errors, and idle keep-alive connections outlive the clients' own idle limits."""

from __future__ import annotations

import re
import socket
import time

import httpx
import pytest


def _request(path: str, body: bytes, *, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    return head.encode() + body


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without a response (got {data!r})"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: *(\d+)", head, re.IGNORECASE).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body


def _disconnects(metrics: str, route: str) -> float:
    found = re.search(
        rf'mmembed_http_requests_total{{method="POST",route="{route}",'
        rf'status="client_disconnected"}} ([0-9.e+]+)',
        metrics,
    )
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize(
    ("path", "body"),
    [("/embed", b'{"text": "half a sen'), ("/v1/embeddings", b'{"model": "m", "input": "hal')],
)
def test_a_client_leaving_mid_body_is_no_error_and_counted_apart(
    server_factory, path: str, body: bytes
):
    server = server_factory(extra_args=["--log-level", "debug"])
    server.start()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(_request(path, body, declared=len(body) + 100))  # promises 100 more bytes
        time.sleep(0.5)  # the server is waiting for the rest of the body
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{server.url}/metrics").text
        if _disconnects(metrics, path) == 1:
            break
        time.sleep(0.2)
    assert _disconnects(metrics, path) == 1, metrics
    assert f'route="{path}",status="500"' not in metrics
    log = server.log()
    assert "client disconnected before its request was read: POST " + path in log
    assert " ERROR " not in log and "Traceback" not in log, log
    # and the service carries on
    assert httpx.post(f"{server.url}/embed", json={"text": "still here"}).status_code == 200


def test_an_idle_connection_stays_open_past_the_clients_own_idle_limit(live_server):
    """uvicorn's default closed idle connections after 5 s, exactly httpx's pool expiry:
    a client reusing one just then lost its request. The server now waits longer."""
    body = b'{"text": "kept alive"}'
    with socket.create_connection(("127.0.0.1", live_server.port)) as sock:
        assert _read_response(sock.sendall(_request("/embed", body)) or sock)[0] == 200
        time.sleep(6.0)  # longer than httpx's 5 s keepalive_expiry and uvicorn's old 5 s
        sock.sendall(_request("/embed", body))
        status, answer = _read_response(sock)
    assert status == 200 and b'"embedding"' in answer

"""Bad input gets a clear 4xx in the client's own wire format, and the server stays healthy."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.support.processes import ManagedProcess, start_gateway

GOOD = {"model": "server", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
KEY = "hg-test-key-0123456789"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, llama_server: tuple[ManagedProcess, str]) -> Iterator[str]:
    config = tmp_path_factory.mktemp("bad") / "gateway.yaml"
    config.write_text(
        f"""
version: 1
server:
  max_body_bytes: 4096
  auth:
    api_keys: [{KEY}]
deployments:
  llama-server:
    type: openai
    base_url: {llama_server[1]}/v1
    model: tiny
    placement: local
    context_window: 2048
models:
  server:
    deployments: [llama-server]
"""
    )
    proc, url = start_gateway(config)
    try:
        yield url
    finally:
        proc.stop()
        assert "Traceback" not in proc.output, proc.output


@pytest.fixture
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {KEY}"}, timeout=30) as c:
        yield c


def _still_healthy(http: httpx.Client) -> None:
    assert http.get("/healthz").status_code == 200
    ok = http.post("/v1/chat/completions", json=GOOD)
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["message"]["content"]


def _openai_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error, dict)
    assert error["message"]
    assert "Traceback" not in response.text
    return error


def _anthropic_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    error = body["error"]
    assert isinstance(error, dict)
    assert error["message"]
    return error


CASES = [
    pytest.param(b"{not json", 400, "not valid JSON", id="malformed-json"),
    pytest.param(b"", 400, "empty", id="empty-body"),
    pytest.param(b"[1, 2]", 400, "JSON object", id="array-body"),
    pytest.param(b'{"model": "server", "messages": "\xff\xfe"}', 400, "UTF-8", id="invalid-utf8"),
    pytest.param(b'{"model": "server", "messages": []}', 400, "messages", id="empty-messages"),
    pytest.param(
        b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', 400, "model", id="wrong-type"
    ),
    pytest.param(b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model", id="missing-model"),
    pytest.param(
        b'{"model": "server", "messages": [{"role": "wizard", "content": "x"}]}', 400, "role", id="bad-role"
    ),
    pytest.param(
        b'{"model": "server", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
        400,
        "max_tokens",
        id="negative-max-tokens",
    ),
    pytest.param(
        b'{"model": "nope", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}',
        404,
        "nope",
        id="unknown-model",
    ),
    pytest.param(
        b'{"model": "server", "messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}',
        413,
        "limit",
        id="oversized",
    ),
]


@pytest.mark.parametrize(("body", "status", "mentions"), CASES)
def test_openai_endpoint_bad_input(http: httpx.Client, body: bytes, status: int, mentions: str) -> None:
    response = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    error = _openai_error(response, status)
    assert mentions.lower() in str(error["message"]).lower() + str(error.get("param")).lower()
    _still_healthy(http)


@pytest.mark.parametrize(("body", "status", "mentions"), CASES)
def test_anthropic_endpoint_bad_input(http: httpx.Client, body: bytes, status: int, mentions: str) -> None:
    response = http.post("/v1/messages", content=body, headers={"content-type": "application/json"})
    error = _anthropic_error(response, status)
    assert error["type"] in ("invalid_request_error", "not_found_error", "request_too_large")
    _still_healthy(http)


def test_anthropic_requires_max_tokens(http: httpx.Client) -> None:
    response = http.post(
        "/v1/messages", json={"model": "server", "messages": [{"role": "user", "content": "x"}]}
    )
    assert "max_tokens" in str(_anthropic_error(response, 400)["message"])


def test_n_greater_than_one_is_rejected(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json={**GOOD, "n": 2})
    assert _openai_error(response, 400)["param"] == "n"


def test_unknown_route_and_method(http: httpx.Client) -> None:
    _openai_error(http.get("/v1/nothing"), 404)
    _openai_error(http.get("/v1/chat/completions"), 405)
    _anthropic_error(http.get("/v1/messages"), 405)
    _still_healthy(http)


def _read_http_response(sock: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += sock.recv(65536)
    return (head + b"\r\n\r\n" + body).decode()


def test_declared_oversized_body_is_refused_before_reading(base: str) -> None:
    # A Content-Length above the limit is refused from the header alone: the body is never
    # sent here, so an answer proves the gateway did not wait for it (raw socket: HTTP clients
    # will not send a body shorter than they declare).
    host, port = base.removeprefix("http://").split(":")
    request = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        "Content-Length: 999999999\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request.encode())
        reply = _read_http_response(sock)
    assert reply.startswith("HTTP/1.1 413"), reply
    assert '"request_too_large"' in reply


def test_missing_and_wrong_key_openai_sdk(base: str) -> None:
    wrong = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.chat.completions.create(
            model="server", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert "sk-wrong" not in info.value.response.text
    assert httpx.post(f"{base}/v1/chat/completions", json=GOOD).status_code == 401


def test_missing_and_wrong_key_anthropic_sdk(base: str) -> None:
    wrong = anthropic.Anthropic(base_url=base, api_key="sk-ant-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model="server", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    right = anthropic.Anthropic(base_url=base, api_key=KEY, max_retries=0)
    message = right.messages.create(
        model="server", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert message.content[0].type == "text"


def test_health_endpoints_need_no_key(base: str) -> None:
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/readyz").status_code == 200

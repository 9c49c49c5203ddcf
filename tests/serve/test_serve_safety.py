"""API key, body limit, default bind address, unknown routes, CLI argument errors."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import openai
import pytest
from click.testing import CliRunner
from serve_support import CLI, Artifacts, Server, run_server

from modelmora.cli import main

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def server(artifacts: Artifacts) -> Iterator[Server]:
    env = {"MODELMORA_API_KEY": KEY}
    with run_server({"emb": artifacts.emb}, "--max-body-bytes", "4096", env=env) as s:
        yield s


def test_binds_loopback_by_default(server: Server) -> None:
    assert urlsplit(server.url).hostname == "127.0.0.1"


@pytest.mark.parametrize("path", ["/v1/models", "/metrics", "/v2/models/emb", "/openapi.json"])
def test_api_key_is_required(server: Server, path: str) -> None:
    assert server.http.get(path).status_code == 401
    wrong = server.http.get(path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    assert KEY not in wrong.text
    ok = server.http.get(path, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200


def test_health_endpoints_are_open(server: Server) -> None:
    assert server.http.get("/v2/health/live").status_code == 200
    assert server.http.get("/v2/health/ready").status_code == 200


def test_openai_client_with_key(server: Server) -> None:
    good = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    assert len(good.embeddings.create(model="emb", input="hi").data) == 1
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model="emb", input="hi")


def test_body_limit_is_413(server: Server) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    big = {"model": "emb", "input": "word " * 2000}
    r = server.http.post("/v1/embeddings", json=big, headers=auth)
    assert r.status_code == 413
    assert "4096" in r.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"model": "emb", "input": "'
        for _ in range(100):
            yield b"word " * 20
        yield b'"}'

    r = server.http.post(
        "/v1/embeddings", content=chunks(), headers={**auth, "content-type": "application/json"}
    )
    assert r.status_code == 413


def test_unknown_route_is_404(server: Server) -> None:
    r = server.http.get("/v1/nothing", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "x"], "NAME=ARTIFACT_DIR"),
        (["--model", "x=/definitely/not/here"], "/definitely/not/here"),
        (["--model", "x=.", "--set", "y.priority=1"], "no --model named 'y'"),
        (["--model", "x=.", "--set", "x.colour=red"], "unknown field 'colour'"),
        (["--model", "x=.", "--set", "x.max_batch_size=zero"], "max_batch_size"),
        ([], "--model NAME=DIR"),
    ],
)
def test_cli_argument_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "serve", "--port", "0", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_rejects_unknown_preload(artifacts: Artifacts) -> None:
    result = CliRunner().invoke(
        main, ["serve", "--model", f"emb={artifacts.emb}", "--preload", "other"]
    )
    assert result.exit_code == 2
    assert "--preload other: no such model" in result.output


@pytest.mark.parametrize(("page", "title"), [("/docs", "Swagger UI"), ("/redoc", "ReDoc")])
def test_api_docs_load_nothing_from_the_network(server: Server, page: str, title: str) -> None:
    """Offline, a page that pulls its JavaScript from a CDN is blank: every asset is ours."""
    auth = {"Authorization": f"Bearer {KEY}"}
    html = server.http.get(page, headers=auth)
    assert html.status_code == 200
    assert f"ModelMora serve - {title}" in html.text
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+\.(?:js|css|png))["']""", html.text)
    assert any(a.endswith(".js") for a in assets), html.text
    for asset in assets:
        assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
        fetched = server.http.get(asset, headers=auth)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 1000, asset


def test_servers_on_a_busy_port_exit_2_with_one_message(
    artifacts: Artifacts, tmp_path: Path
) -> None:
    """``serve`` and ``ui`` say the same thing and exit; ``dagster dev`` alone would hang."""
    (tmp_path / "modelmora.yml").write_text("models: {}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        commands = {
            "serve": ["serve", "--model", f"lin={artifacts.lin}", "--port", str(port)],
            "ui": ["-C", str(tmp_path), "ui", "--port", str(port)],
        }
        for name, args in commands.items():
            done = subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=120)
            assert done.returncode == 2, (name, done.stderr)
            assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in (
                done.stderr
            ), name
            assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def strict(artifacts: Artifacts) -> Iterator[Server]:
    args = ["--header-timeout", "1", "--body-timeout", "1", "--max-header-bytes", "4096"]
    with run_server({"emb": artifacts.emb}, *args, "--max-connections", "3") as s:
        yield s


def _raw(server: Server) -> socket.socket:
    parts = urlsplit(server.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    return sock


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (it must close it)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_headers_that_trickle_in_get_408_and_the_connection_closes(strict: Server) -> None:
    with _raw(strict) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # never finished
        answer = _answer(sock)  # blocks until the server's 1 s header timeout closes it
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_body_that_never_arrives_gets_408(strict: Server) -> None:
    with _raw(strict) as sock:
        sock.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"model": '
        )
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_oversized_headers_get_431_without_being_buffered(strict: Server) -> None:
    with _raw(strict) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ")
        with contextlib.suppress(OSError):  # the server may close while we still send
            for _ in range(64):  # 4 MiB offered; the limit is 4 KiB
                sock.sendall(b"a" * 65536)
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert strict.http.get("/v2/health/live").status_code == 200


def test_connections_beyond_the_limit_get_503(strict: Server) -> None:
    idle = [_raw(strict), _raw(strict)]
    try:
        with _raw(strict) as sock:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in idle:
            sock.close()


def test_an_empty_api_key_is_an_error_not_auth_off() -> None:
    result = CliRunner().invoke(main, ["serve", "--model", "m=."], env={"MODELMORA_API_KEY": ""})
    assert result.exit_code == 2
    assert "the API key is empty" in result.output


def test_a_public_address_without_a_key_warns(artifacts: Artifacts) -> None:
    with run_server({"emb": artifacts.emb}, "--host", "0.0.0.0") as s:
        assert "without an API key" in s.stderr()

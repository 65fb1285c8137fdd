"""Cross-site writes and Host checks (issue 29, finding 7): without API keys a page on
another origin cannot write, and the server answers only to Host names it was bound to
or configured for (DNS rebinding)."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from service.origin import HostPolicy, same_origin, split_host
from service.settings import Settings

EVIL = "http://evil.example"


def _start_browser(profile: Path):
    """test_page's headless Chromium (tests are not a package: load it by path)."""
    spec = importlib.util.spec_from_file_location(
        "page_tests", Path(__file__).with_name("test_page.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.start_browser(profile)


def _count(client) -> int:
    return client.get("/items").json()["total"]


# In process: every rule, through the app's middleware ----------------------------------


def test_a_cross_site_form_post_is_refused_and_creates_nothing(client) -> None:
    before = _count(client)
    response = client.post(
        "/items",
        data={"text": "planted by another site"},
        headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["type"] == "cross_site_request"
    assert "evil.example" in error["message"] and "MMEMBED_API_KEYS" in error["message"]
    assert _count(client) == before


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},  # a browser without Fetch Metadata
        {"Sec-Fetch-Site": "cross-site"},  # Origin stripped somewhere on the way
        {"Origin": "null"},  # a sandboxed frame or file:// page
        {"Origin": "http://127.0.0.1:9999"},  # same host, another port: another origin
        {"Origin": "http://localhost"},  # another name for the same host: another origin
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_every_state_changing_method_from_another_origin_is_refused(
    client, headers: dict[str, str], method: str
) -> None:
    response = client.request(method, "/items/some-id", json={"text": "x"}, headers=headers)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["type"] == "cross_site_request"


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, SDKs
        {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"},  # the page at /
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
        {"Origin": "http://127.0.0.1:80", "Sec-Fetch-Site": "same-site"},
    ],
)
def test_same_origin_and_non_browser_writes_work(client, headers: dict[str, str]) -> None:
    before = _count(client)
    response = client.post("/items", json={"text": "a red ball"}, headers=headers)
    assert response.status_code == 201, response.text
    assert _count(client) == before + 1


def test_reads_from_another_origin_are_not_refused(client) -> None:
    # a cross-site page cannot read the answer (no CORS), and reads change nothing
    response = client.get("/items", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200


def test_with_api_keys_the_key_guards_writes_instead(make_client) -> None:
    client = make_client(api_keys="k1")
    cross = {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}
    assert client.post("/items", json={"text": "x"}, headers=cross).status_code == 401
    keyed = {**cross, "Authorization": "Bearer k1"}
    assert client.post("/items", json={"text": "x"}, headers=keyed).status_code == 201


def test_a_host_the_server_is_not_bound_to_gets_421(client) -> None:
    response = client.get("/items", headers={"Host": "rebound.evil.example:8000"})
    assert response.status_code == 421
    error = response.json()["error"]
    assert error["type"] == "misdirected_request"
    assert "rebound.evil.example" in error["message"]
    assert "MMEMBED_ALLOWED_HOSTS" in error["message"]
    for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host


@pytest.mark.parametrize(
    ("bind", "configured", "host", "allowed"),
    [
        ("127.0.0.1", [], "localhost", True),
        ("127.0.0.1", [], "192.168.1.5", False),
        ("127.0.0.1", [], "evil.example", False),
        ("127.0.0.1", ["mmembed.lan"], "mmembed.lan", True),
        ("127.0.0.1", ["*"], "anything.example", True),
        ("0.0.0.0", [], "192.168.1.5", True),  # users at the published port, by address
        ("0.0.0.0", [], "fe80::1", True),
        ("0.0.0.0", [], "127.0.0.1", True),  # the container's healthcheck
        ("0.0.0.0", [], "localhost", True),
        ("0.0.0.0", [], "mmembed.example.com", False),  # a name must be configured
        ("0.0.0.0", ["MMEMBED.example.com"], "mmembed.example.com", True),
        ("10.0.0.7", [], "10.0.0.7", True),
        ("10.0.0.7", [], "localhost", False),
    ],
)
def test_host_policy(bind: str, configured: list[str], host: str, allowed: bool) -> None:
    settings = Settings(host=bind, allowed_hosts=configured, allow_remote_without_key=True)
    assert HostPolicy(settings).allows(host) is allowed


def test_allowed_hosts_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMEMBED_ALLOWED_HOSTS", "a.example, b.example")
    assert Settings().allowed_hosts == ["a.example", "b.example"]


def test_origin_and_host_parsing() -> None:
    assert split_host("[::1]:8000") == ("::1", 8000)
    assert split_host("Example.COM") == ("example.com", None)
    assert split_host("a:b:c") is None and split_host(":80") is None
    assert split_host("host:99999999") is None
    assert same_origin("https://x.example", "x.example")  # TLS proxy: default port
    assert same_origin("http://x.example:8000", "x.example:8000")
    assert not same_origin("http://x.example:8000", "x.example")  # a proxy lost the port
    assert not same_origin("null", "x.example")
    assert not same_origin("http://x.example:notaport", "x.example")


# A real server and a real browser ------------------------------------------------------


@pytest.fixture
def attacker_site(tmp_path: Path) -> Iterator[str]:
    """Another origin (http://localhost:PORT) serving `attack.html`."""
    root = tmp_path / "attacker"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_page_on_another_origin_cannot_write_and_the_page_at_root_can(
    live_server, attacker_site: str, tmp_path: Path
) -> None:
    """The issue's reproduction in headless Chromium: a page on another origin
    auto-submits a multipart form to /items; nothing is created. The page at / still adds
    an item with its own fetch()."""
    target = f"{live_server.url}/items"
    (tmp_path / "attacker" / "attack.html").write_text(
        f"""<!doctype html><title>attack</title>
        <form id="f" method="post" enctype="multipart/form-data" action="{target}">
          <input name="text" value="planted cross-site"><input name="id" value="planted">
        </form><script>document.getElementById('f').submit()</script>"""
    )
    before = httpx.get(target).json()["total"]
    driver = _start_browser(tmp_path / "chromium")
    try:
        driver.get(f"{attacker_site}/attack.html")
        # the form's answer replaces the attacker's page: the service's JSON error
        WebDriverWait(driver, 60).until(lambda d: "cross_site_request" in d.page_source)
        assert httpx.get(f"{target}/planted").status_code == 404
        assert httpx.get(target).json()["total"] == before

        driver.get(f"{live_server.url}/")
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "add-text"))
        status = driver.execute_async_script(
            """const done = arguments[arguments.length - 1];
            fetch('/items', {method: 'POST', headers: {'Content-Type': 'application/json'},
                             body: JSON.stringify({text: 'added by the page', id: 'own'})})
              .then(r => done(r.status), e => done(String(e)));"""
        )
        assert status == 201
        item = httpx.get(f"{target}/own").json()
        assert item["id"] == "own" and item["text"] == "added by the page"
    finally:
        driver.quit()


def test_a_rebound_host_is_refused_by_a_real_server(live_server) -> None:
    """DNS rebinding: a page on evil.example, its name now pointing at 127.0.0.1, sends
    Host: evil.example."""
    response = httpx.get(f"{live_server.url}/items", headers={"Host": "evil.example"})
    assert response.status_code == 421
    assert response.json()["error"]["type"] == "misdirected_request"
    assert httpx.get(f"{live_server.url}/items").status_code == 200

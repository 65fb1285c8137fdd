"""Bearer API keys, and no open service on the network by accident."""

from __future__ import annotations

import pytest

from service.auth import UnsafeBind, check_bind, key_matches
from service.settings import Settings


@pytest.fixture
def keyed(make_client):
    return make_client(api_keys="first-key,second-key")


def test_data_endpoints_need_a_key(keyed):
    for method, path in [("POST", "/embed"), ("GET", "/search?q=x"), ("GET", "/items")]:
        response = keyed.request(method, path, json={"text": "x"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "unauthorized"


def test_wrong_key_is_refused_and_either_right_key_works(keyed):
    wrong = keyed.post("/embed", json={"text": "x"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "invalid" in wrong.json()["error"]["message"]
    for key in ("first-key", "second-key"):
        ok = keyed.post("/embed", json={"text": "x"}, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200


def test_probes_stay_open(keyed):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert keyed.get(path).status_code == 200


def test_no_keys_means_open(client):
    assert client.get("/items").status_code == 200


def test_key_comparison():
    settings = Settings(api_keys="abc,def")
    assert key_matches("abc", settings) and key_matches("def", settings)
    assert not key_matches("ab", settings) and not key_matches("abcd", settings)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.com"])
def test_network_bind_without_key_is_refused(host):
    with pytest.raises(UnsafeBind, match="MMEMBED_API_KEYS"):
        check_bind(Settings(host=host))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_without_key_is_fine(host):
    check_bind(Settings(host=host))


def test_network_bind_with_a_key_or_explicit_permission_is_fine():
    check_bind(Settings(host="0.0.0.0", api_keys="k"))
    check_bind(Settings(host="0.0.0.0", allow_remote_without_key=True))

"""The page's files as served (in-process): headers, content types, nothing from elsewhere."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from service.routers.page import STATIC_DIR

REPO = Path(__file__).resolve().parents[2]
STATIC_FILES = sorted(p.relative_to(STATIC_DIR.parent).as_posix() for p in STATIC_DIR.iterdir())
# A URL that would make the browser load something from another origin.
REMOTE = re.compile(
    r"""(?:src|href)\s*=\s*["'](?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import"""
)


def test_page_is_served_with_a_strict_content_security_policy(client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="/static/app.js" defer></script>' in page.text
    policy = page.headers["content-security-policy"]
    assert policy.startswith("default-src 'self';") and "http" not in policy
    assert client.head("/").status_code == 200


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/static/app.js", "javascript"), ("/static/style.css", "text/css")],
)
def test_static_files_are_served(client, path: str, content_type: str) -> None:
    response = client.get(path)
    assert response.status_code == 200 and content_type in response.headers["content-type"]
    assert response.headers["etag"] and response.headers["cache-control"] == "no-cache"
    again = client.get(path, headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert client.get("/static/missing.js").status_code == 404


def test_the_page_loads_nothing_from_another_origin() -> None:
    for path in STATIC_DIR.iterdir():
        assert not REMOTE.search(path.read_text()), path


def test_static_files_ship_in_the_package() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["service"]
    assert STATIC_FILES == ["static/app.js", "static/index.html", "static/style.css"]
    for name in STATIC_FILES:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_the_page_is_open_but_the_api_needs_a_key(make_client) -> None:
    client = make_client(api_keys="k1")
    assert client.get("/").status_code == 200
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/items").status_code == 401
    assert client.get("/items/x/preview").status_code == 401

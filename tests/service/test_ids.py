"""Issue 29, finding 8, over real HTTP: every storable id's preview can be fetched, ids
no URL can name are refused, and an item "X/preview" no longer hides X's preview."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture(scope="module")
def server(module_server_factory):
    server = module_server_factory()
    server.start()
    return server


def _add_image(http: httpx.Client, item_id: str, png: bytes) -> None:
    response = http.post("/items", files={"file": ("p.png", png)}, data={"id": item_id})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("length", [248, 249, 250, 256])
def test_a_long_ids_preview_is_reachable(server, png_bytes, length):
    """Ids of 249 to 256 characters answered 400: the route looked up id + "/preview",
    which is over the 256-character limit."""
    item_id = f"{length}-" + "x" * (length - len(f"{length}-"))
    assert len(item_id) == length
    with httpx.Client(base_url=server.url, timeout=60) as http:
        _add_image(http, item_id, png_bytes)
        for path in (f"/items/{item_id}/preview", f"/previews/{item_id}"):
            response = http.get(path)
            assert response.status_code == 200, (path, response.text)
            assert response.headers["content-type"] == "image/webp"
            assert response.content[:4] == b"RIFF"


@pytest.mark.parametrize("item_id", [".", ".."])
def test_ids_that_no_url_can_name_are_refused(server, item_id):
    """The page's /items/. and /items/.. were resolved by the browser to /items/ and /."""
    with httpx.Client(base_url=server.url, timeout=60) as http:
        response = http.post("/items", json={"text": "dots", "id": item_id})
        assert response.status_code == 400, response.text
        assert "'.' or '..'" in response.json()["error"]["message"]
        form = http.post("/items", data={"text": "dots", "id": item_id})
        assert form.status_code == 400, form.text


def test_an_item_named_x_preview_does_not_hide_xs_preview(server, png_bytes):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        _add_image(http, "X", png_bytes)
        assert http.post("/items", json={"text": "a twin", "id": "X/preview"}).status_code == 201
        # the old URL keeps its old meaning: the item "X/preview" ...
        assert http.get("/items/X/preview").json()["id"] == "X/preview"
        # ... and X's preview has a URL no id can take
        preview = http.get("/previews/X")
        assert preview.status_code == 200
        assert preview.headers["content-type"] == "image/webp"
        assert (
            http.get("/previews/X", headers={"If-None-Match": preview.headers["ETag"]}).status_code
            == 304
        )
        assert http.get("/previews/X/preview").json()["error"]["type"] == "preview_not_found"
        assert http.get("/previews/nothing").json()["error"]["type"] == "not_found"


def test_the_page_asks_for_previews_by_the_unambiguous_url(server):
    script = httpx.get(f"{server.url}/static/app.js").text
    assert "`/previews/${encodeURIComponent(id)}`" in script

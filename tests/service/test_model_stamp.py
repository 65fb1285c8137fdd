"""A server refuses an index that holds another model's vectors, and says which and why."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from index.errors import ModelMismatch
from service.app import create_app, load_embedder
from service.cli import main
from service.settings import Settings


@pytest.fixture(scope="module")
def text_only_embedder():
    """Another model: the tiny preset with only a text path, so other weights."""
    return load_embedder(Settings(preset="tiny", modalities=("text",)))


def _client(data_dir, embedder, **settings) -> TestClient:
    app = create_app(Settings(preset="tiny", data_dir=data_dir, **settings), embedder=embedder)
    return TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1")


def test_readyz_names_the_weights_and_a_restart_keeps_the_index(tmp_path, tiny_embedder):
    with _client(tmp_path, tiny_embedder) as client:
        assert client.post("/items", json={"text": "a dog", "id": "t1"}).status_code == 201
        digest = client.get("/readyz").json()["weights_digest"]
    assert digest == tiny_embedder.weights_digest and len(digest) == 64
    with _client(tmp_path, tiny_embedder) as client:
        assert client.get("/items/t1").status_code == 200


def test_another_model_cannot_start_on_a_filled_index(tmp_path, tiny_embedder, text_only_embedder):
    assert text_only_embedder.weights_digest != tiny_embedder.weights_digest
    with _client(tmp_path, tiny_embedder) as client:
        assert client.post("/items", json={"text": "a dog"}).status_code == 201
    with pytest.raises(ModelMismatch, match="holds 1 vectors made by preset tiny"):
        with _client(tmp_path, text_only_embedder):
            pass
    # the refused start left the index to its model, which starts on it as before
    with _client(tmp_path, tiny_embedder) as client:
        assert client.get("/readyz").json()["index"]["counts"]["text"] == 1


def test_an_empty_index_follows_the_model_served(tmp_path, tiny_embedder, text_only_embedder):
    with _client(tmp_path, tiny_embedder) as client:
        item = client.post("/items", json={"text": "a dog", "id": "t1"})
        assert item.status_code == 201
        assert client.delete("/items/t1").status_code == 200
    with _client(tmp_path, text_only_embedder) as client:
        ready = client.get("/readyz").json()
        assert ready["weights_digest"] == text_only_embedder.weights_digest
        assert client.post("/items", json={"text": "a cat"}).status_code == 201
    with pytest.raises(ModelMismatch):
        with _client(tmp_path, tiny_embedder):
            pass


def test_serve_process_exits_and_names_both_models(server_factory):
    first = server_factory()
    first.start()
    assert httpx.post(f"{first.url}/items", json={"text": "a dog"}).status_code == 201
    assert first.stop() == 0
    second = server_factory(model_args=["--preset", "tiny", "--modalities", "text"])
    with pytest.raises(AssertionError, match="server exited with [1-9]") as caught:
        second.start()
    log = str(caught.value)
    assert "holds 1 vectors made by preset tiny (untrained) (weights" in log
    assert "re-embed the items" in log


def test_cli_refuses_to_add_another_models_vectors(tmp_path, capsys):
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["index", "add", "--preset", "tiny", *data, "--text", "a dog"]) == 0
    capsys.readouterr()
    code = main(
        ["index", "add", "--preset", "tiny", "--modalities", "text", *data, "--text", "a cat"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "holds 1 vectors made by preset tiny (untrained)" in err
    assert main(["index", "stats", *data]) == 0
    assert '"count": 1' in capsys.readouterr().out

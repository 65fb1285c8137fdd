"""`mmembed serve` as a real process on 127.0.0.1, spoken to over HTTP, and restarted."""

from __future__ import annotations

import json

import httpx
import numpy as np

from model.matryoshka import truncate


def test_embed_store_search_delete_restart(server_factory, png_bytes, png_bytes_2, wav_bytes):
    """One user's session against a real server, start to restart (long on purpose: each
    step depends on the state the steps before it left)."""
    server = server_factory()
    server.start()
    http = httpx.Client(base_url=server.url, timeout=30)

    ready = http.get("/readyz").json()
    assert ready["demo"] is True and ready["preset"] == "tiny"
    assert "DEMO MODEL" in server.log(), "the demo model is announced in the logs"

    # Embeddings of a real PNG, real speech and a text.
    image = http.post("/embed", files={"file": ("photo.png", png_bytes)}).json()
    audio = http.post("/embed", files={"file": ("speech.wav", wav_bytes)}).json()
    text = http.post("/embed", data={"text": "a small dog barks"}).json()
    assert (image["modality"], audio["modality"], text["modality"]) == ("image", "audio", "text")
    for body in (image, audio, text):
        vector = np.asarray(body["embedding"])
        assert vector.shape == (512,) and abs(np.linalg.norm(vector) - 1) < 1e-5

    # dims=64: 64 unit-norm values equal to the 512-d prefix renormalised.
    short = np.asarray(
        http.post("/embed?dims=64", files={"file": ("photo.png", png_bytes)}).json()["embedding"]
    )
    assert short.shape == (64,) and abs(np.linalg.norm(short) - 1) < 1e-5
    np.testing.assert_allclose(
        short, truncate(np.asarray(image["embedding"])[None], 64)[0], atol=1e-5
    )

    # Items of all three modalities.
    ids = {
        "img1": http.post("/items", files={"file": ("a.png", png_bytes)}, data={"id": "img1"}),
        "img2": http.post(
            "/items",
            files={"file": ("b.png", png_bytes_2)},
            data={"id": "img2", "metadata": '{"n": 2}'},
        ),
        "speech": http.post("/items", files={"file": ("s.wav", wav_bytes)}, data={"id": "speech"}),
        "caption": http.post(
            "/items",
            json={"text": "a small dog barks", "id": "caption", "metadata": {"lang": "en"}},
        ),
        "other": http.post("/items", json={"text": "stock prices fell", "id": "other"}),
    }
    assert all(r.status_code == 201 for r in ids.values()), [r.text for r in ids.values()]
    assert http.get("/items").json()["total"] == 5

    def searches() -> dict[str, list[tuple[str, float]]]:
        text_to_image = http.get("/search", params={"q": "a dog", "modality": "image", "k": 5})
        image_to_text = http.post("/search?modality=text&k=5", files={"file": ("q.png", png_bytes)})
        image_to_all = http.post("/search?k=5&dims=64", files={"file": ("q.png", png_bytes)})
        audio_to_all = http.post("/search?k=5&mode=adaptive", files={"file": ("q.wav", wav_bytes)})
        out = {}
        for name, response in [
            ("text->image", text_to_image),
            ("image->text", image_to_text),
            ("image->all", image_to_all),
            ("audio->all", audio_to_all),
        ]:
            assert response.status_code == 200, response.text
            out[name] = [(hit["id"], hit["score"]) for hit in response.json()["results"]]
        return out

    before = searches()
    assert {i for i, _ in before["text->image"]} == {"img1", "img2"}
    assert {i for i, _ in before["image->text"]} == {"caption", "other"}
    assert before["image->all"][0][0] == "img1" and before["image->all"][0][1] > 0.999
    assert before["audio->all"][0][0] == "speech"

    assert http.delete("/items/other").status_code == 200
    assert http.get("/items/other").status_code == 404
    after_delete = searches()
    assert [i for i, _ in after_delete["image->text"]] == ["caption"]

    # Restart: the same index, the same answers.
    assert server.stop() == 0, "SIGTERM stops the server cleanly"
    http.close()
    server.start()
    http = httpx.Client(base_url=server.url, timeout=30)
    assert http.get("/items").json()["total"] == 4
    caption = http.get("/items/caption").json()
    assert caption["metadata"] == {"lang": "en"} and caption["modality"] == "text"
    assert json.dumps(searches(), sort_keys=True) == json.dumps(after_delete, sort_keys=True)
    assert server.stop() == 0

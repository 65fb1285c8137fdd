"""Previews over HTTP: made when items are stored, served by GET /items/{id}/preview."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from service.previews import PreviewLimits, audio_preview, image_preview, preview_rate
from service.settings import Settings


def _png(size: tuple[int, int]) -> bytes:
    x = np.linspace(0, 255, size[0], dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, size[1], dtype=np.float32)[:, None, None]
    pixels = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG")
    return buf.getvalue()


def _wav(seconds: float, rate: int = 44_100, channels: int = 2) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([tone] * channels, axis=1), rate, format="WAV")
    return buf.getvalue()


def _image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_image_item_gets_a_webp_thumbnail_at_most_320px(client):
    added = client.post("/items", files={"file": ("wide.png", _png((1000, 400)))})
    assert added.status_code == 201, added.text
    preview = client.get(f"/items/{added.json()['id']}/preview")
    assert preview.status_code == 200
    assert preview.headers["content-type"] == "image/webp"
    thumb = _image(preview.content)
    assert thumb.format == "WEBP" and thumb.size == (320, 128)
    # the gradient survives: the top-left corner is black, the bottom-right one bright
    assert thumb.getpixel((0, 0))[0] < 20 and sum(thumb.getpixel((319, 127))) > 600


def test_small_image_is_not_enlarged(client, png_bytes):
    item_id = client.post("/items", files={"file": ("x.png", png_bytes)}).json()["id"]
    thumb = _image(client.get(f"/items/{item_id}/preview").content)
    assert thumb.size == _image(png_bytes).size == (96, 80)


def test_audio_item_gets_a_playable_mp3_of_its_first_30_seconds(client, wav_bytes):
    short = client.post("/items", files={"file": ("speech.wav", wav_bytes)}).json()["id"]
    long = client.post("/items", files={"file": ("tone.wav", _wav(42.0))}).json()["id"]
    for item_id, seconds in ((short, sf.info(io.BytesIO(wav_bytes)).duration), (long, 30.0)):
        preview = client.get(f"/items/{item_id}/preview")
        assert preview.status_code == 200 and preview.headers["content-type"] == "audio/mpeg"
        decoded, rate = sf.read(io.BytesIO(preview.content), dtype="float32")
        assert decoded.ndim == 1  # mono
        # MP3 pads a frame or two at each end
        assert abs(decoded.shape[0] / rate - seconds) < 0.15, (decoded.shape, rate, seconds)
        assert np.abs(decoded).max() > 0.05  # not silence
    assert rate == 22_050  # 44.1 kHz source halved


def test_preview_settings_bound_sizes(make_client):
    client = make_client(preview_image_px=64, preview_audio_seconds=2.5)
    image = client.post("/items", files={"file": ("x.png", _png((300, 600)))}).json()["id"]
    audio = client.post("/items", files={"file": ("t.wav", _wav(6.0, 16_000, 1))}).json()["id"]
    assert _image(client.get(f"/items/{image}/preview").content).size == (32, 64)
    clip, rate = sf.read(io.BytesIO(client.get(f"/items/{audio}/preview").content))
    assert rate == 16_000 and abs(clip.shape[0] / rate - 2.5) < 0.15


def test_preview_over_max_bytes_is_left_out_but_the_item_is_stored(make_client):
    client = make_client(preview_max_bytes=1024)
    added = client.post("/items", files={"file": ("t.wav", _wav(10.0))})
    assert added.status_code == 201
    item_id = added.json()["id"]
    assert client.get(f"/items/{item_id}").json()["modality"] == "audio"
    missing = client.get(f"/items/{item_id}/preview")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "preview_not_found"


def test_text_and_unknown_items_have_no_preview(client):
    client.post("/items", json={"text": "a red ball", "id": "t1"})
    text = client.get("/items/t1/preview")
    assert text.status_code == 404
    assert text.json()["error"] == {
        "type": "preview_not_found",
        "message": "item 't1' has no preview",
    }
    unknown = client.get("/items/nobody/preview")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found"


def test_preview_caching_headers_and_304(client, png_bytes):
    item_id = client.post("/items", files={"file": ("x.png", png_bytes)}).json()["id"]
    first = client.get(f"/items/{item_id}/preview")
    etag = first.headers["etag"]
    assert etag.startswith('"') and len(etag) == 34
    assert first.headers["cache-control"] == "private, no-cache"
    assert first.headers["x-content-type-options"] == "nosniff"
    again = client.get(f"/items/{item_id}/preview", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other = client.get(f"/items/{item_id}/preview", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200 and other.content == first.content


def test_preview_is_deleted_with_its_item(client, png_bytes):
    item_id = client.post("/items", files={"file": ("x.png", png_bytes)}).json()["id"]
    assert client.get(f"/items/{item_id}/preview").status_code == 200
    assert client.delete(f"/items/{item_id}").status_code == 200
    gone = client.get(f"/items/{item_id}/preview")
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found"
    assert client.get("/readyz").json()["index"]["preview_bytes"] == 0


def test_put_replaces_the_preview(client, png_bytes, wav_bytes):
    client.put("/items/p", files={"file": ("x.png", png_bytes)})
    old = client.get("/items/p/preview")
    client.put("/items/p", files={"file": ("x.wav", wav_bytes)})
    assert client.get("/items/p/preview").headers["content-type"] == "audio/mpeg"
    client.put("/items/p", json={"text": "now a text"})
    assert client.get("/items/p/preview").status_code == 404
    assert old.headers["content-type"] == "image/webp"


def test_batch_add_stores_a_preview_per_file(client, png_bytes, wav_bytes):
    added = client.post(
        "/items/batch",
        files=[("file", ("a.png", png_bytes)), ("file", ("b.wav", wav_bytes))],
        data={"text": "words"},
    )
    assert added.status_code == 201, added.text
    kinds = {}
    for item in added.json()["items"]:
        response = client.get(f"/items/{item['id']}/preview")
        kinds[item["modality"]] = response.headers["content-type"] if response.is_success else 404
    assert kinds == {"image": "image/webp", "audio": "audio/mpeg", "text": 404}


def test_ids_with_slashes_have_previews(client, png_bytes):
    client.put("/items/photos/2024/a.png", files={"file": ("x.png", png_bytes)})
    assert client.get("/items/photos/2024/a.png/preview").status_code == 200
    assert client.get("/items/photos/2024/a.png").json()["id"] == "photos/2024/a.png"


def test_an_id_ending_in_preview_is_still_fetched_as_before(client, png_bytes):
    """GET /items/a/preview named the item "a/preview" before previews existed; it still does."""
    client.put("/items/a", files={"file": ("x.png", png_bytes)})
    client.put("/items/a/preview", json={"text": "an unlucky id", "metadata": {"k": 1}})
    item = client.get("/items/a/preview", params={"include_embedding": True, "dims": 64})
    assert item.status_code == 200 and item.headers["content-type"] == "application/json"
    body = item.json()
    assert (body["id"], body["metadata"], len(body["embedding"])) == ("a/preview", {"k": 1}, 64)
    assert client.get("/items/a/preview/preview").json()["error"]["type"] == "preview_not_found"
    assert client.get("/items/a/preview", params={"dims": 3}).status_code == 422
    client.delete("/items/a/preview")
    assert client.get("/items/a/preview").headers["content-type"] == "image/webp"


def test_previews_off_keeps_todays_behaviour(make_client, png_bytes, wav_bytes):
    """Clients that never ask for previews see the same answers whether previews are on or off."""
    on, off = make_client(), make_client(previews=False)
    answers = []
    for client in (on, off):
        seen = [
            client.post("/items", files={"file": ("x.png", png_bytes)}, data={"id": "i"}).json(),
            client.post("/items", files={"file": ("x.wav", wav_bytes)}, data={"id": "a"}).json(),
            client.post("/items", json={"text": "hi", "id": "t", "metadata": {"k": 1}}).json(),
            client.get("/search", params={"q": "hi", "dims": 64}).json(),
            {k: v for k, v in client.get("/items/i").json().items() if not k.endswith("_at")},
            [it["id"] for it in client.get("/items").json()["items"]],
        ]
        answers.append(seen)
    assert answers[0] == answers[1]
    assert off.get("/items/i/preview").json()["error"]["type"] == "preview_not_found"
    assert on.get("/readyz").json()["index"]["preview_bytes"] > 0
    assert off.get("/readyz").json()["index"]["preview_bytes"] == 0


def test_search_reports_server_timing(client, png_bytes):
    client.post("/items", json={"text": "x"})
    for response in (
        client.get("/search", params={"q": "x"}),
        client.post("/search", files={"file": ("x.png", png_bytes)}),
    ):
        assert response.status_code == 200
        parts = dict(p.strip().split(";dur=") for p in response.headers["server-timing"].split(","))
        assert set(parts) == {"embed", "search"} and all(float(v) >= 0 for v in parts.values())


def test_previews_setting_from_environment(monkeypatch):
    monkeypatch.setenv("MMEMBED_PREVIEWS", "false")
    monkeypatch.setenv("MMEMBED_PREVIEW_IMAGE_PX", "200")
    settings = Settings()
    assert settings.previews is False and settings.preview_image_px == 200
    assert Settings(_env_file=None).previews is False
    monkeypatch.delenv("MMEMBED_PREVIEWS")
    assert Settings().previews is True


@pytest.mark.parametrize("name", ["preview_image_px", "preview_max_bytes", "preview_audio_seconds"])
def test_preview_bounds_refuse_nonsense(name):
    with pytest.raises(ValueError, match=name):
        Settings(**{name: 0})


@pytest.mark.parametrize(
    ("source", "expected"),
    [(8000, 8000), (16000, 16000), (22050, 22050), (44100, 22050), (96000, 22050), (10000, 11025)],
)
def test_preview_rate(source, expected):
    assert preview_rate(source) == expected


def test_preview_functions_directly():
    limits = PreviewLimits(image_px=50)
    thumb = image_preview(Image.new("RGB", (500, 100), "red"), limits)
    assert _image(thumb.data).size == (50, 10)
    silent = audio_preview(_wav(0.0, 16_000, 1), limits)
    assert silent.media_type == "audio/mpeg" and len(silent.data) > 0


def test_the_preview_cost_of_spoken_clips_is_measured_from_both(tmp_path, tiny_embedder):
    """`python -m service.preview_retrieval` on a spoken manifest: each clip embedded from
    its file and from the MP3 preview the service would keep; a clip longer than the
    preview is heard only in part, so its vector moves more."""
    import json

    from service.preview_retrieval import measure_audio

    rows = []
    for i, seconds in enumerate((1.0, 1.5, 6.0)):
        t = np.arange(int(16_000 * seconds)) / 16_000
        tone = 0.3 * np.sin(2 * np.pi * (300 + 200 * i) * t) * (1 + (t > 2.5))
        sf.write(tmp_path / f"{i}.wav", (tone / 2).astype(np.float32), 16_000)
        rows.append({"audio": f"{i}.wav", "text": f"clip {i}"})
    manifest = tmp_path / "test-x.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    short = measure_audio(tiny_embedder, manifest, PreviewLimits(audio_seconds=30.0))
    cut = measure_audio(tiny_embedder, manifest, PreviewLimits(audio_seconds=2.0))
    assert short["clips"] == cut["clips"] == 3
    for key in ("original audio->text", "preview text->audio"):
        assert 0.0 <= short[key] <= 1.0
    assert short["original audio->text"] == cut["original audio->text"]
    assert short["mean cosine original vs preview"] > 0.9
    assert cut["mean cosine original vs preview"] < short["mean cosine original vs preview"]

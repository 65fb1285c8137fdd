"""Issue 29, findings 1 and 2, and the adversarial suite: the worst file of every media
type under every endpoint that takes one, against a real `mmembed serve`, with the
server's peak memory (Linux VmHWM, reset before each request) measured around it.

Run with `-s` to see the table of peak growth per request beside the limit.
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="peak memory is read from /proc"
)

MB = 2**20
PER_REQUEST_MB = 300  # the issue's bound on what one request may add to peak memory
SIDE = 6300  # 39.69 M pixels: just under the 40 M per-image limit
AUDIO_SECONDS = 290  # just under the 300 s per-clip limit


def _image(fmt: str, side: int = SIDE) -> bytes:
    img = Image.new("RGB", (side, side), (200, 30, 30))
    buf = io.BytesIO()
    if fmt == "GIF":
        img = img.convert("P")
    elif fmt == "BMP":
        img = img.convert("1")  # 1 bit per pixel: the only BMP this size under 20 MB
    options = {"WEBP": {"lossless": True, "method": 0}, "TIFF": {"compression": "tiff_deflate"}}
    img.save(buf, fmt, **options.get(fmt, {}))
    return buf.getvalue()


def _audio(fmt: str, rate: int, channels: int, seconds: float = AUDIO_SECONDS) -> bytes:
    subtype = {"OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}.get(fmt, "PCM_16")
    buf = io.BytesIO()
    with sf.SoundFile(
        buf, "w", samplerate=rate, channels=channels, format=fmt, subtype=subtype
    ) as f:
        t = np.arange(rate * 10) / rate
        tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        block = np.repeat(tone[:, None], channels, axis=1)
        for _ in range(int(seconds // 10)):
            f.write(block)
    return buf.getvalue()


WORST = {
    # images: the largest each format holds under the pixel limit and 20 MB upload
    "PNG": lambda: _image("PNG"),
    "JPEG": lambda: _image("JPEG"),
    "WebP": lambda: _image("WEBP", side=3950),  # WebP: about 16 M pixels (media.py)
    "TIFF": lambda: _image("TIFF"),
    "GIF": lambda: _image("GIF"),
    "BMP": lambda: _image("BMP"),
    # audio: the longest under the clip limit
    "WAV": lambda: _audio("WAV", 16000, 1),
    "AIFF": lambda: _audio("AIFF", 16000, 1),
    "FLAC": lambda: _audio("FLAC", 48000, 2),
    "OGG": lambda: _audio("OGG", 48000, 2),
    "MP3": lambda: _audio("MP3", 16000, 1),
}

ENDPOINTS: dict[str, Callable[[bytes], tuple[str, str, dict]]] = {
    "/embed": lambda data: ("POST", "/embed", {"files": {"file": ("f", data)}}),
    "/embed/batch": lambda data: ("POST", "/embed/batch", {"files": [("file", ("f", data))]}),
    "/items": lambda data: ("POST", "/items", {"files": {"file": ("f", data)}}),
    "/items/batch": lambda data: (
        "POST",
        "/items/batch",
        {"json": {"items": [{"content_base64": base64.b64encode(data).decode()}]}},
    ),
    "POST /search": lambda data: ("POST", "/search", {"files": {"file": ("f", data)}}),
}


class Peak:
    """The server's peak resident memory over a block, above its resident memory before."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")

    def __enter__(self) -> Peak:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        self.before = self._status("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth_mb = (self._status("VmHWM") - self.before) / MB


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return {name: make() for name, make in WORST.items()}


@pytest.fixture(scope="module")
def server(module_server_factory):
    server = module_server_factory()
    server.start()
    return server


REPORT: list[str] = []


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("kind", WORST)
def test_the_worst_file_of_each_type_stays_under_the_per_request_bound(
    server, media, kind, endpoint
):
    method, path, kwargs = ENDPOINTS[endpoint](media[kind])
    with httpx.Client(base_url=server.url, timeout=300) as http, Peak(server.proc.pid) as peak:
        response = http.request(method, path, **kwargs)
    assert response.status_code in (200, 201), response.text
    line = (
        f"{kind:5} {endpoint:13} {len(media[kind]) / MB:6.2f} MB file: "
        f"peak +{peak.growth_mb:6.1f} MB (bound {PER_REQUEST_MB})"
    )
    REPORT.append(line)
    print(line)
    assert peak.growth_mb < PER_REQUEST_MB, line


# The reproductions: each cost 0.7 to 5.5 GB before the header was read first.


def _wav_at_1_hz(num_bytes: int = 10_000) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, 1, 2, 2, 16)  # PCM, mono, 1 Hz, 16-bit
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + num_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", num_bytes)
        + b"\x01\x00" * (num_bytes // 2)
    )


def _ten_hours_of_silence() -> bytes:
    """The issue's 917 KB FLAC: 10 h at 8 kHz."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=8000, channels=1, format="FLAC", subtype="PCM_16") as f:
        silence = np.zeros(480_000, np.int16)
        for _ in range(600):
            f.write(silence)
    return buf.getvalue()


def test_ten_hours_of_flac_are_refused_from_the_header(server):
    data = _ten_hours_of_silence()
    with httpx.Client(base_url=server.url, timeout=300) as http, Peak(server.proc.pid) as peak:
        response = http.post("/embed", files={"file": ("s.flac", data)})
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "audio_too_long"
    assert "36000.0 s" in response.json()["error"]["message"]
    assert peak.growth_mb < 50, peak.growth_mb  # was +5.5 GB


def test_a_wav_at_1_hz_is_refused_from_the_header(server):
    with httpx.Client(base_url=server.url, timeout=300) as http, Peak(server.proc.pid) as peak:
        response = http.post("/embed", files={"file": ("w.wav", _wav_at_1_hz())})
    assert response.status_code == 400, response.text
    assert "1 Hz" in response.json()["error"]["message"]
    assert peak.growth_mb < 50, peak.growth_mb  # was +727 MB


def test_four_large_images_in_one_batch_are_refused_before_decoding(server, media):
    files = [("file", (f"{i}.png", media["PNG"])) for i in range(4)]
    with httpx.Client(base_url=server.url, timeout=300) as http, Peak(server.proc.pid) as peak:
        response = http.post("/embed/batch", files=files)
    assert response.status_code == 413, response.text
    assert "MMEMBED_MAX_REQUEST_PIXELS" in response.json()["error"]["message"]
    assert peak.growth_mb < 50, peak.growth_mb  # was +3.2 GB


def test_two_large_images_in_one_batch_are_decoded_one_at_a_time(server, media):
    files = [("file", (f"{i}.png", media["PNG"])) for i in range(2)]
    with httpx.Client(base_url=server.url, timeout=300) as http, Peak(server.proc.pid) as peak:
        response = http.post("/embed/batch", files=files)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2
    assert peak.growth_mb < PER_REQUEST_MB, peak.growth_mb


CAP_MB = 200


def test_concurrent_worst_cases_stay_under_the_in_flight_cap(server_factory, media):
    """Six 6300x6300 PNGs at once against a 200 MiB cap: decoding one holds about
    170 MB, so they take turns or get 429 with Retry-After; the peak stays near the cap."""
    server = server_factory(env={"MMEMBED_MAX_DECODE_BYTES_IN_FLIGHT": str(CAP_MB * MB)})
    server.start()

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as http:
            return await asyncio.gather(
                *(http.post("/embed", files={"file": ("p.png", media["PNG"])}) for _ in range(6))
            )

    with Peak(server.proc.pid) as peak:
        responses = asyncio.run(main())
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, [r.text for r in responses]
    assert 200 in statuses
    for response in responses:
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "1"
            assert "MMEMBED_MAX_DECODE_BYTES_IN_FLIGHT" in response.json()["error"]["message"]
    line = (
        f"6 concurrent 6300x6300 PNG, cap {CAP_MB} MiB: {statuses}, peak +{peak.growth_mb:.1f} MB"
    )
    print(line)
    assert peak.growth_mb < CAP_MB + 64, line

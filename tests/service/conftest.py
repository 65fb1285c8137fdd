"""Fixtures for the service tests: real media files, in-process apps, a real server process."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from model import Embedder
from service.app import create_app, load_embedder
from service.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parents[2]
# In-process clients name the server by a Host it answers to (service/origin.py), not
# TestClient's default "testserver".
LOCAL = "http://127.0.0.1"


@pytest.fixture(autouse=True)
def _no_mmembed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings in these tests come from the tests, never from the caller's MMEMBED_* variables."""
    for name in list(os.environ):
        if name.startswith("MMEMBED_"):
            monkeypatch.delenv(name)


# Media -----------------------------------------------------------------------------


def _drawing(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A gradient with shapes drawn on it: real pixel data, different per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = rng.uniform(0, 255, 3)[None, None, :]
    pixels = (base * x + (255 - base) * y).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        box = (x0, y0, x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2)))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return img


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    return _encode(_drawing(1), "PNG")


@pytest.fixture(scope="session")
def png_bytes_2() -> bytes:
    return _encode(_drawing(2, (120, 64)), "PNG")


@pytest.fixture(scope="session")
def jpeg_bytes() -> bytes:
    return _encode(_drawing(3), "JPEG")


@pytest.fixture(scope="session")
def wav_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Real speech from espeak-ng (22.05 kHz mono WAV)."""
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(path), "a small dog barks at the red ball"],
        check=True,
        capture_output=True,
    )
    return path.read_bytes()


@pytest.fixture(scope="session")
def flac_bytes(wav_bytes: bytes) -> bytes:
    """The same speech as stereo FLAC at 44.1 kHz."""
    samples, rate = sf.read(io.BytesIO(wav_bytes), dtype="float32")
    stereo = np.stack([samples, samples * 0.5], axis=1)
    buf = io.BytesIO()
    sf.write(buf, np.repeat(stereo, 2, axis=0), rate * 2, format="FLAC")
    return buf.getvalue()


# In-process apps -------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_embedder() -> Embedder:
    """The same tiny model `mmembed serve --preset tiny` builds (seeded heads)."""
    return load_embedder(Settings(preset="tiny"))


def client_factory(
    folder: Path, embedder: Embedder, **defaults: object
) -> Iterator[Callable[..., TestClient]]:
    """Yields make(**overrides): a started TestClient over an app serving `embedder`, with
    its own data folder in `folder` and `defaults` | overrides as settings; closes them
    all after."""
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        values = {"data_dir": folder / f"data{len(clients)}", **defaults} | overrides
        app = create_app(Settings(**values), embedder=embedder)
        client = TestClient(app, raise_server_exceptions=False, base_url=LOCAL)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def make_client(tmp_path: Path, tiny_embedder: Embedder) -> Iterator[Callable[..., TestClient]]:
    """Factory: a started TestClient over a tiny-preset app with its own data folder."""
    yield from client_factory(tmp_path, tiny_embedder, preset="tiny")


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture(scope="session")
def describing_checkpoint(tmp_path_factory, tiny_llm_dir: Path) -> Path:
    """A tiny-preset checkpoint with an (untrained, seeded) projector for the tiny LLM."""
    import torch

    from model.checkpoint import save_checkpoint
    from model.describer import DescriberConfig, PrefixProjector, save_projector
    from model.llm import llm_fingerprint, load_llm, resolve_llm

    torch.manual_seed(0)
    embedder = Embedder.from_preset("tiny")
    folder = save_checkpoint(
        embedder.model, tmp_path_factory.mktemp("describing") / "m", {"trained": True}
    )
    llm, _ = load_llm(resolve_llm(str(tiny_llm_dir)))
    config = DescriberConfig(
        latent_dim=embedder.model.config.perceiver.dim,
        llm_dim=32,
        hidden=0,
        llm="tiny",
        llm_fingerprint=llm_fingerprint(llm),
        weights_digest=embedder.weights_digest,
    )
    save_projector(folder / "describer", PrefixProjector(config), config)
    return folder


# Real server processes -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mmembed_command() -> list[str]:
    script = Path(sys.executable).parent / "mmembed"
    if script.exists():
        return [str(script)]
    found = shutil.which("mmembed")
    return [found] if found else [sys.executable, "-m", "service.cli"]


@dataclass
class ServerProcess:
    """`mmembed serve` running as a real process on 127.0.0.1."""

    data_dir: Path
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # What model to serve; [] serves the shipped release, as `mmembed serve` does.
    model_args: list[str] = field(default_factory=lambda: ["--preset", "tiny"])
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        command = [*mmembed_command(), "serve", *self.model_args, "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--data-dir", str(self.data_dir), *self.extra_args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MMEMBED_")}
        # One torch thread per server: on a small shared machine, idle-spinning OpenMP
        # threads of several processes slow every op down by an order of magnitude.
        env |= {"HF_HUB_OFFLINE": "1", "MMEMBED_TORCH_THREADS": "1", **self.env}
        # The server runs this checkout's code even when the installed `mmembed` is an
        # editable install of another one (a git worktree sharing a venv).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log()}")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server for the HTTP tests that do not restart it."""
    root = tmp_path_factory.mktemp("live")
    server = ServerProcess(root / "data", root / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def make(**kwargs: object) -> ServerProcess:
        server = ServerProcess(tmp_path / "data", tmp_path / "server.log", **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()


@pytest.fixture(scope="module")
def module_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ServerProcess]]:
    """Servers that live for one test module (each with its own data folder)."""
    servers: list[ServerProcess] = []

    def make(**kwargs: object) -> ServerProcess:
        root = tmp_path_factory.mktemp("server")
        server = ServerProcess(root / "data", root / "server.log", **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()

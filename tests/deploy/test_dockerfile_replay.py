"""Replays the Dockerfile outside Docker: its install steps into a fresh venv,
its entry point with its environment, then its HEALTHCHECK command.

What cannot run here is named, not skipped silently: `apt-get` and `useradd`
need a Debian image and root (checked by reading instead), and the torch index
URL is swapped for PyPI because only PyPI is reachable; pip still takes the
local CPU wheel of the pinned version.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NOT_REPLAYED = ("apt-get", "useradd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expand(value: str, variables: dict[str, str]) -> str:
    def repl(match: re.Match) -> str:
        name, default = match.group(1), match.group(3)
        return variables.get(name) or (default or "")

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", repl, value)


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("server did not become ready")


@pytest.mark.slow
def test_dockerfile_install_and_start_commands_work(tmp_path, dockerfile, compose):
    """Replays the Dockerfile's RUN and COPY steps in order, then starts its entry point
    (long on purpose: one build, step by step, as Docker would run it)."""
    app = tmp_path / "app"
    app.mkdir()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    build_vars = dict(dockerfile.args)
    build_vars["TORCH_INDEX_URL"] = "https://pypi.org/simple"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMEMBED_")}
    env.pop("PIP_NO_CACHE_DIR", None)
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    env["VIRTUAL_ENV"] = str(venv)

    replayed, not_replayed = [], []
    for keyword, value in dockerfile.instructions:
        if keyword == "COPY":
            *sources, _dest = value.split()
            for source in sources:
                src = REPO_ROOT / source
                if src.is_dir():
                    shutil.copytree(src, app / source, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(src, app / source)
        elif keyword == "RUN":
            command = _expand(value, build_vars)
            if command.startswith(NOT_REPLAYED):
                not_replayed.append(command)
                continue
            subprocess.run(["bash", "-ec", command], cwd=app, env=env, check=True)
            replayed.append(command)
    print(
        "replayed:",
        *replayed,
        "not replayed (need a Debian image and root):",
        *not_replayed,
        sep="\n  ",
    )
    assert any("libsndfile1" in c for c in not_replayed), "the image must install libsndfile"
    assert sum("pip install" in c for c in replayed) >= 3

    service_env = compose["services"]["mmembed"]["environment"]
    port = _free_port()
    run_env = dict(env)
    run_env.update({k: v for k, v in dockerfile.env.items() if k != "PIP_NO_CACHE_DIR"})
    run_env.update({k: _expand(str(v), {}) for k, v in service_env.items()})
    run_env.update(
        {
            # No hub here: the demo preset; loopback only, as this machine requires.
            "MMEMBED_PRESET": "tiny",
            "MMEMBED_HOST": "127.0.0.1",
            "MMEMBED_PORT": str(port),
            "MMEMBED_DATA_DIR": str(tmp_path / "data"),
            "HF_HOME": str(tmp_path / "models"),
            "HF_HUB_OFFLINE": "1",
        }
    )
    command = dockerfile.exec_form("ENTRYPOINT") + dockerfile.exec_form("CMD")
    proc = subprocess.Popen(command, cwd=tmp_path, env=run_env)
    try:
        _wait_ready(port, proc)
        health = subprocess.run(dockerfile.exec_form("HEALTHCHECK"), env=run_env, timeout=30)
        assert health.returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, f"the server should stop cleanly on SIGTERM, exited {code}"

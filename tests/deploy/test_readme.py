"""The README's commands work as written: its test command is what CI runs, its
quick start runs against a real server, and the settings it names exist."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text()


def _code_blocks(text: str) -> list[tuple[str, str]]:
    """(marker comment before the block or "", block body) for every ```bash block."""
    pattern = re.compile(r"(?:<!-- readme-test: (\w+) -->\n)?```bash\n(.*?)```", re.S)
    return [(m.group(1) or "", m.group(2)) for m in pattern.finditer(text)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_first_lines_give_the_run_and_test_commands():
    _, first = _code_blocks(README)[0]
    run_command, test_command = first.strip().splitlines()
    assert run_command.endswith("mmembed serve")
    assert "pytest" in test_command
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines(), ".ci/run must run the README's test command as written"


def test_every_setting_named_in_the_readme_exists():
    fields = {f"MMEMBED_{name.upper()}" for name in Settings.model_fields}
    compose_only = {
        "MMEMBED_PUBLISH",
        "MMEMBED_TAG",
        "MMEMBED_CHECKPOINTS_DIR",
        "MMEMBED_DB_PASSWORD",
    }
    named = set(re.findall(r"MMEMBED_[A-Z_]+", README)) - {"MMEMBED_SHARED_MODELS"}
    unknown = named - fields - compose_only
    assert not unknown, f"README names settings that do not exist: {sorted(unknown)}"
    table = set(re.findall(r"^\| `(MMEMBED_[A-Z_]+)`", README, re.M))
    assert fields <= table, f"settings missing from the README table: {sorted(fields - table)}"


def test_every_subcommand_in_the_readme_exists():
    code = "\n".join(body for _, body in _code_blocks(README))
    named = set(re.findall(r"^\s*mmembed ([a-z]+)", code, re.M))
    named |= set(re.findall(r"`mmembed ([a-z]+)", README))
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    listed = set(re.findall(r"^    ([a-z]+)\s", out, re.M))
    assert named <= listed, f"README names subcommands the CLI lacks: {sorted(named - listed)}"


def _mmembed_commands(text: str) -> list[list[str]]:
    """Every ``mmembed ...`` command line of the bash blocks, continuations joined,
    shell variables expanded from the block's own assignments (``ENC="..."``)."""
    commands = []
    for _, body in _code_blocks(text):
        body = body.replace("\\\n", " ")
        variables = dict(re.findall(r'^([A-Z_]+)="([^"]*)"$', body, re.M))
        for line in body.splitlines():
            line = line.strip()
            if not line.startswith("mmembed "):
                continue
            for name, value in variables.items():
                line = line.replace(f"${name}", value)
            commands.append(shlex.split(line.split(" #")[0])[1:])
    return commands


def test_every_mmembed_command_in_the_readme_parses():
    """Flags, not only subcommand names: a renamed option breaks this test, not a reader."""
    from service.cli import build_parser

    commands = _mmembed_commands(README)
    assert len(commands) >= 10, "fewer mmembed commands than the README shows; is the parser off?"
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"README command does not parse: mmembed {shlex.join(argv)} ({exc})")


@pytest.mark.slow
def test_quick_start_runs_against_a_real_server(tmp_path):
    (block,) = [body for marker, body in _code_blocks(README) if marker == "quickstart"]
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--preset",
            "tiny",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, "server exited early"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not become ready"
                time.sleep(0.5)
        outputs = {}
        for line in filter(None, (raw.strip() for raw in block.splitlines())):
            command = line.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            result = subprocess.run(
                ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            assert result.returncode == 0, f"{line!r} failed: {result.stderr or result.stdout}"
            outputs[line] = result.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    search = next(out for line, out in outputs.items() if "search?q=red+circle&k=3&dims=64" in line)
    assert '"dims":64' in search and '"id":"caption"' in search
    deleted = next(out for line, out in outputs.items() if "DELETE" in line)
    assert '"deleted":true' in deleted
    assert "mmembed_http_requests_total" in outputs["curl -sf 127.0.0.1:8000/metrics"]

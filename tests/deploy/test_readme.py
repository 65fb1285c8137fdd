"""The README's and docs' commands work as written: the test command on the README's
first lines is what CI runs, the quick starts run against a real server, and the
settings and subcommands they name exist.

The README is the front page and docs/ holds the rest, so every check but the first
reads both (`DOCS`): a command or a setting may move between them freely."""

from __future__ import annotations

import json
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
from tests.docs_blocks import DOCS, README, REPO_ROOT, code_blocks, marked_block


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_first_lines_give_the_run_and_test_commands():
    _, first = code_blocks(README)[0]
    run_command, test_command = first.strip().splitlines()
    assert run_command.endswith("mmembed serve")
    assert "pytest" in test_command
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines(), ".ci/run must run the README's test command as written"


def test_every_setting_named_in_the_docs_exists():
    fields = {f"MMEMBED_{name.upper()}" for name in Settings.model_fields}
    compose_only = {
        "MMEMBED_PUBLISH",
        "MMEMBED_TAG",
        "MMEMBED_CHECKPOINTS_DIR",
        "MMEMBED_DB_PASSWORD",
    }
    named = set(re.findall(r"MMEMBED_[A-Z_]+", DOCS)) - {"MMEMBED_SHARED_MODELS"}
    unknown = named - fields - compose_only
    assert not unknown, f"README or docs name settings that do not exist: {sorted(unknown)}"
    configuration = (REPO_ROOT / "docs" / "configuration.md").read_text()
    table = set(re.findall(r"^\| `(MMEMBED_[A-Z_]+)`", configuration, re.M))
    missing = sorted(fields - table)
    assert not missing, f"settings missing from the table in docs/configuration.md: {missing}"


def test_every_subcommand_in_the_docs_exists():
    code = "\n".join(body for _, body in code_blocks(DOCS))
    named = set(re.findall(r"^\s*mmembed ([a-z]+)", code, re.M))
    named |= set(re.findall(r"`mmembed ([a-z]+)", DOCS))
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    listed = set(re.findall(r"^    ([a-z]+)\s", out, re.M))
    assert named <= listed, f"docs name subcommands the CLI lacks: {sorted(named - listed)}"


def _mmembed_commands(text: str) -> list[list[str]]:
    """Every ``mmembed ...`` command line of the bash blocks, continuations joined,
    shell variables expanded from the block's own assignments (``ENC="..."``)."""
    commands = []
    for _, body in code_blocks(text):
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


def test_every_mmembed_command_in_the_docs_parses():
    """Flags, not only subcommand names: a renamed option breaks this test, not a reader."""
    from service.cli import build_parser

    commands = _mmembed_commands(DOCS)
    assert len(commands) >= 10, "fewer mmembed commands than the docs show; is the parser off?"
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"documented command does not parse: mmembed {shlex.join(argv)} ({exc})")


def _run_lines(block: str, port: int, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """Each command line of a block, run by bash against the server on `port`: its stdout."""
    outputs = {}
    for line in filter(None, (raw.strip() for raw in block.splitlines())):
        command = line.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        result = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{line!r} failed: {result.stderr or result.stdout}"
        outputs[line] = result.stdout
    return outputs


def test_the_quick_start_on_the_front_page_is_in_the_readme():
    assert "<!-- readme-test: front -->" in README


@pytest.mark.slow
def test_quick_start_runs_against_a_real_server(tmp_path):
    """The curl tour (docs/api.md), then the README's own quick start, on one server."""
    block = marked_block("quickstart")
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
        outputs = _run_lines(block, port, tmp_path, env)
        front = _run_lines(marked_block("front"), port, tmp_path, env)
        images = _run_lines(marked_block("images"), port, tmp_path, env)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    search = next(out for line, out in outputs.items() if "search?q=red+circle&k=3&dims=64" in line)
    assert '"dims":64' in search and '"id":"caption"' in search
    deleted = next(out for line, out in outputs.items() if "DELETE" in line)
    assert '"deleted":true' in deleted
    assert "mmembed_http_requests_total" in outputs["curl -sf 127.0.0.1:8000/metrics"]
    # the front page's: three texts stored, a spoken query, hits that carry their text
    # (the tiny model ranks at random, and the tour's items are in the index too)
    created = [
        json.loads(out) for line, out in front.items() if "POST 127.0.0.1:8000/items" in line
    ]
    assert [item["modality"] for item in created] == ["text"] * 3
    spoken = next(json.loads(out) for line, out in front.items() if "file=@query.wav" in line)
    assert spoken["query_modality"] == "audio" and len(spoken["results"]) == 2
    assert all(
        set(hit) == {"id", "score", "modality", "text", "metadata"} for hit in spoken["results"]
    )
    # the images block: nine drawings stored with their names as captions; a typed and a
    # spoken query each answer one image hit that carries its caption (the tiny model
    # ranks at random; tests/model/test_release_images.py checks the release finds it)
    drawn = sorted(p.name for p in (tmp_path / "shapes").iterdir())
    assert len(drawn) == 9 and "red-circle.png" in drawn
    for line, out in images.items():
        if "search" in line:
            (hit,) = json.loads(out)["results"]
            assert hit["modality"] == "image" and hit["text"] in {n[:-4] for n in drawn}
    texts = next(json.loads(out) for line, out in front.items() if "include=text" in line)
    (hit,) = texts["results"]
    assert set(hit) == {"id", "score", "modality", "text"} and isinstance(hit["text"], str)

"""Parsed Dockerfile and docker-compose.yml, for the tests that keep them honest.

No Docker engine runs in CI, so these files are checked by reading them and by
running the same commands they run.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Dockerfile:
    """The instructions of a Dockerfile, in order, continuation lines joined."""

    instructions: list[tuple[str, str]]
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def all(self, keyword: str) -> list[str]:
        return [value for key, value in self.instructions if key == keyword]

    def one(self, keyword: str) -> str:
        values = self.all(keyword)
        assert len(values) == 1, f"expected one {keyword} in the Dockerfile, found {len(values)}"
        return values[0]

    def exec_form(self, keyword: str) -> list[str]:
        value = self.one(keyword)
        if keyword == "HEALTHCHECK":
            value = value[value.index("CMD") + 3 :].strip()
        parsed = json.loads(value)
        assert isinstance(parsed, list), f"{keyword} must use the exec (JSON) form"
        return parsed


def parse_dockerfile(text: str) -> Dockerfile:
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        logical.append(current + line)
        current = ""
    instructions = []
    args: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        instructions.append((keyword, value))
        if keyword == "ARG" and "=" in value:
            name, _, default = value.partition("=")
            args[name] = default
        elif keyword == "ENV":
            for token in shlex.split(value):
                name, _, val = token.partition("=")
                env[name] = val
    return Dockerfile(instructions, args, env)


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    return parse_dockerfile((REPO_ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="session")
def pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())

"""The bash blocks of the README and docs/, for the tests that run them as written."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text()
# The README is the front page and docs/ holds the rest: a block may move between them.
DOCS = "\n".join(
    path.read_text() for path in [REPO_ROOT / "README.md", *sorted(REPO_ROOT.glob("docs/*.md"))]
)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(marker comment before the block or "", block body) for every ```bash block."""
    pattern = re.compile(r"(?:<!-- readme-test: (\w+) -->\n)?```bash\n(.*?)```", re.S)
    return [(m.group(1) or "", m.group(2)) for m in pattern.finditer(text)]


def marked_block(marker: str) -> str:
    """The one bash block under `<!-- readme-test: MARKER -->`, in the README or docs/."""
    (block,) = [body for found, body in code_blocks(DOCS) if found == marker]
    return block

"""Every relative link in README.md and docs/ resolves: the file exists, and a `#anchor`
names a heading of the page it points at (GitHub's heading ids)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def pages(root: Path = REPO_ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _prose(text: str) -> str:
    """The text with fenced code blocks and code spans blanked (links there are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading)  # inline HTML
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The ids of a page's headings, repeated ones numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path, root: Path = REPO_ROOT) -> list[str]:
    """'target: why' for each relative link of `page` that does not resolve."""
    problems = []
    for target in _LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            problems.append(f"{target}: no such file {os.path.relpath(resolved, root)}")
            continue
        if fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: {resolved.name} has no heading #{fragment}")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(page: Path):
    assert broken_links(page) == []


def test_the_readme_links_every_docs_page():
    readme = (REPO_ROOT / "README.md").read_text()
    linked = {(REPO_ROOT / t.partition("#")[0]).resolve() for t in _LINK.findall(_prose(readme))}
    unlinked = [p.name for p in pages()[1:] if p.resolve() not in linked]
    assert unlinked == [], f"docs pages the README does not link: {unlinked}"


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "# Page A\n\n## Scale out: PostgreSQL\n\n## Notes\n\n## Notes\n\n"
        "```bash\n[not a link](nowhere.md)\n```\n"
    )
    (tmp_path / "README.md").write_text(
        "# Top\n\n[ok](docs/a.md) [ok](docs/a.md#scale-out-postgresql) [ok](docs/a.md#notes-1)"
        " [ok](#top) [web](https://example.com/x) `[code](gone.md)`\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#scale-out) [self](#nope)\n"
        "![picture](docs/missing.png)\n"
    )
    assert broken_links(tmp_path / "README.md", tmp_path) == [
        "docs/b.md: no such file docs/b.md",
        "docs/a.md#scale-out: a.md has no heading #scale-out",
        "#nope: README.md has no heading #nope",
        "docs/missing.png: no such file docs/missing.png",
    ]
    assert broken_links(tmp_path / "docs" / "a.md", tmp_path) == []

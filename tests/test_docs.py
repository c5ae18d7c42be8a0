"""Documentation references stay inside the repository and point at headings that exist.

Docstrings, YAML notes and docs cite ``docs/<page>.md#<anchor>`` (or ``README.md#<anchor>``); a
reader of an installed copy has nothing else. Files that live outside the repository (the design
brief, the reference notes, the style guide) must not be cited.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [*sorted((ROOT / "mmbench").rglob("*.py")), *sorted((ROOT / "mmbench" / "configs").rglob("*.yaml")),
           *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "benchmarks").glob("*")), ROOT / "README.md"]
#: names of files outside the repository, and section signs of their numbering
EXTERNAL = re.compile(r"DESIGN\.md|style\.md|measurement\.md|ecosystem\.md|shared/reference|§")
#: a markdown page and anchor: docs/methods.md#mce, README.md#start, ../README.md#x, adding.md#a-method
LINK = re.compile(r"((?:\.\./|docs/)?[A-Za-z_-]+\.md)#([A-Za-z0-9_-]+)")


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", page.read_text(), re.M)}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() and path.suffix in {".py", ".yaml", ".md"} else ""


def test_sources_are_found() -> None:
    assert len(SOURCES) > 50 and ROOT / "docs" / "methods.md" in SOURCES


def test_no_citation_of_files_outside_the_repository() -> None:
    bad = []
    for path in SOURCES:
        for n, line in enumerate(_text(path).splitlines(), 1):
            # a bare "methods.md" outside docs/ means the reference notes, not docs/methods.md
            bare = path.parent != ROOT / "docs" and re.search(r"(?<!docs/)\bmethods\.md", line)
            if EXTERNAL.search(line) or bare:
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "cites a file outside the repository (move the facts to docs/):\n" + "\n".join(bad)


def test_doc_links_resolve() -> None:
    missing = []
    for path in SOURCES:
        for m in LINK.finditer(_text(path)):
            target, anchor = m.group(1), m.group(2)
            base = path.parent if path.parent == ROOT / "docs" and not target.startswith("docs/") else ROOT
            page = (base / target).resolve()
            where = f"{path.relative_to(ROOT)}: {target}#{anchor}"
            if not page.is_file():
                missing.append(f"{where}: no such page")
            elif anchor not in anchors(page):
                missing.append(f"{where}: no such heading (has: {', '.join(sorted(anchors(page)))})")
    assert not missing, "\n".join(missing)


def test_every_method_section_exists() -> None:
    """docs/methods.md has a section for every registered method, head with parameters and balancer."""
    from mmbench.registry import BALANCERS, HEADS, METHODS

    have = anchors(ROOT / "docs" / "methods.md")
    names = [*METHODS.names(), *(n for n in HEADS.names() if n not in ("native", "linear")),
             *(n for n in BALANCERS.names() if n != "none")]
    want = {n: slug(n.replace("_", " ")).replace("ifmmin", "if-mmin") for n in names}
    assert not {n for n, a in want.items() if a not in have}, f"missing sections: {want}"

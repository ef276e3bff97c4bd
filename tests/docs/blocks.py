"""The shell blocks of README.md and docs/**/*.md, with the directives that say how a test runs them.

A block is a fenced ``bash``/``sh``/``shell``/``console`` block. HTML comments directly above its fence
(no blank line between them) direct its test; they do not show on the rendered page:

- ``<!-- docs-test: skip (reason) -->``: not run; the reason is required.
- ``<!-- docs-test: slow -->``: the page's test is marked ``slow``.
- ``<!-- docs-test: open-bandit -->``: the Open Bandit sample is copied in as ``all.csv`` first.
- ``<!-- docs-test: replace "A" -> "B" -->``: the text A (which must occur) becomes B, to run small.
- ``<!-- docs-test: expect-error "TEXT" -->``: the block must exit non-zero with TEXT on stderr.
- ``<!-- docs-test: same-as README.md -->``: not run here, because a block of the same text is run on
  that page (checked).

The blocks of one page run in order in one directory, as a reader who follows it would run them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(\S*)\s*$")
DIRECTIVE = re.compile(r"^<!-- docs-test: (.*) -->$")
REPLACE = re.compile(r'^replace "(.*)" -> "(.*)"$')
EXPECT = re.compile(r'^expect-error "(.+)"$')
SKIP = re.compile(r"^skip \((.+)\)$")


@dataclass
class Block:
    page: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    skip: str | None = None  # the reason
    slow: bool = False
    open_bandit: bool = False
    replacements: list[tuple[str, str]] = field(default_factory=list)
    expect_error: str | None = None
    same_as: str | None = None  # a page (relative to the root) that runs the same text
    problems: list[str] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        return self.skip is None and self.same_as is None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def script(self) -> str:
        """The block's text with its replacements applied."""
        text = self.text
        for old, new in self.replacements:
            text = text.replace(old, new)
        return text


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _apply(block: Block, directive: str) -> None:
    if m := SKIP.match(directive):
        block.skip = m.group(1).strip()
    elif directive == "slow":
        block.slow = True
    elif directive == "open-bandit":
        block.open_bandit = True
    elif m := REPLACE.match(directive):
        block.replacements.append((m.group(1), m.group(2)))
    elif directive.startswith("same-as "):
        block.same_as = directive.removeprefix("same-as ").strip()
    elif m := EXPECT.match(directive):
        block.expect_error = m.group(1)
    else:
        block.problems.append(f"unknown directive {directive!r}")


def blocks_of(path: Path) -> list[Block]:
    """Every fenced block of the page (any language), with the directives above it."""
    lines = path.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        block = Block(str(path.relative_to(ROOT)), start + 1, lang, "\n".join(lines[i + 1 : j]) + "\n")
        k = start - 1
        directives = []
        while k >= 0 and (d := DIRECTIVE.match(lines[k].strip())):
            directives.insert(0, d.group(1).strip())
            k -= 1
        for d in directives:
            _apply(block, d)
        out.append(block)
        i = j + 1
    return out


def shell_blocks(path: Path) -> list[Block]:
    return [b for b in blocks_of(path) if b.lang in SHELL]

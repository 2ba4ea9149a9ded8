"""Runbook commands as a drill executes them: the ```` ```sh drill ```` blocks of a Markdown page.

A block whose info string is ``sh drill`` holds the literal commands an operator types, with
placeholders written as shell variables (``$TENANT``, ``$TARGET_URL``…) that the drill sets in
the environment. Blocks may sit inside list items (``3. ```sh drill``, or indented): their
content is taken relative to the fence's column. Each block runs in its own
``bash -euo pipefail`` (an unset placeholder or any failing command stops it), in document
order; the heading above a block names it, so a test can prepare what a step assumes (a stuck
lock, a database the platform's migrations created) before the step runs.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DRILL_INFO = ("sh", "drill")
_FENCE = re.compile(r"^(?P<lead> *(?:\d+\.\s+|[-*+]\s+)?)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_HEADING = re.compile(r"^(#{1,6})\s+(?P<text>.+?)\s*#*\s*$")
# Names the command that failed; the block itself runs exactly as written after this line.
_TRAP = "trap 'echo \"drill: exit $? from: $BASH_COMMAND\" >&2' ERR\n"


@dataclass(frozen=True)
class Block:
    """One ``sh drill`` block: where it is and what it runs."""

    page: Path
    line: int  # of the opening fence, 1-based
    heading: str
    script: str

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line} ({self.heading})"


def drill_blocks(page: Path) -> list[Block]:
    """The page's ``sh drill`` blocks in document order. A fence whose info string mentions
    ``drill`` but is not exactly ``sh drill`` is refused (it would silently go undrilled)."""
    blocks: list[Block] = []
    heading = page.name
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if opened is None:
            titled = _HEADING.match(lines[i])
            if titled:
                heading = titled["text"]
            i += 1
            continue
        fence, words = opened["fence"], tuple(opened["info"].split())
        if "drill" in words and words != DRILL_INFO:
            raise ValueError(f"{page.name}:{i + 1}: a drill block's info string is exactly "
                             f"'sh drill', not {opened['info'].strip()!r}")
        column, start, body = len(opened["lead"]), i + 1, []
        i += 1
        while i < len(lines) and not _closes(lines[i], fence):
            body.append(_dedent(lines[i], column))
            i += 1
        if i == len(lines):
            raise ValueError(f"{page.name}:{start}: code block never closed")
        i += 1
        if words == DRILL_INFO:
            blocks.append(Block(page, start, heading, "\n".join(body) + "\n"))
    return blocks


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return (stripped.startswith(fence[0] * len(fence))
            and stripped == fence[0] * len(stripped))


def _dedent(line: str, column: int) -> str:
    """Strip up to ``column`` leading spaces: the list item's indentation, not the code's."""
    spaces = len(line) - len(line.lstrip(" "))
    return line[min(spaces, column):]


@dataclass
class Drill:
    """Runs blocks in an operator's environment, in a working directory of its own; ``before``
    and ``after`` (by heading) prepare and check what a section's steps are about."""

    env: Mapping[str, str]
    cwd: Path
    before: Mapping[str, Callable[[Block], None]] = field(default_factory=dict)
    after: Mapping[str, Callable[[Block, str], None]] = field(default_factory=dict)
    timeout: float = 600.0
    ran: list[Block] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # of each block run, in order

    def run_all(self, blocks: list[Block]) -> None:
        """Every block in order; ``before`` a section's first block, ``after`` its last."""
        for i, block in enumerate(blocks):
            section = (block.page, block.heading)
            first = i == 0 or (blocks[i - 1].page, blocks[i - 1].heading) != section
            last = i == len(blocks) - 1 or (blocks[i + 1].page, blocks[i + 1].heading) != section
            if first and block.heading in self.before:
                self.before[block.heading](block)
            stdout = self.run(block)
            if last and block.heading in self.after:
                self.after[block.heading](block, stdout)

    def run(self, block: Block) -> str:
        """The block's stdout; any failure raises, naming the block and the failing command."""
        started = time.monotonic()
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", _TRAP + block.script],
                              env=dict(self.env), cwd=self.cwd, capture_output=True, text=True,
                              timeout=self.timeout, check=False)
        self.ran.append(block)
        self.seconds.append(time.monotonic() - started)
        if proc.returncode != 0:
            raise AssertionError(
                f"runbook step {block.where} failed (exit {proc.returncode}):\n{block.script}\n"
                f"--- stdout (tail)\n{proc.stdout[-3000:]}\n"
                f"--- stderr (tail)\n{proc.stderr[-6000:]}")
        return proc.stdout

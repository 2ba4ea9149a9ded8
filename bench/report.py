"""Figures, their targets and verdicts, printed as they come and written to docs/benchmarks.md.

Every judged figure is a ``Check``: the measured value, the target of issue 10 it is judged
against, and a verdict printed on its own line ("MISS: ..."), never hidden. docs/benchmarks.md
is made of sections between markers; a run replaces the sections it measured and keeps the
others (a partial run with ``--only``, or the CLI start-up section another benchmark fills).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BEGIN = "<!-- BEGIN section:{name} -->"
END = "<!-- END section:{name} -->"
_SECTION = re.compile(r"<!-- BEGIN section:(?P<name>[\w-]+) -->\n(?P<body>.*?)"
                      r"<!-- END section:(?P=name) -->\n?", re.DOTALL)


@dataclass(frozen=True)
class Check:
    """A figure judged against a target: ``value op limit`` (op ``<=`` or ``>=``)."""

    what: str
    value: float
    unit: str
    limit: float
    op: str = "<="
    target: str = ""
    """Where the target comes from, and at which size it is set."""
    lower_bound: bool = False
    """The value is only a lower bound (the measured step was stopped at its time limit)."""
    failed: bool = False
    """The measured step failed: the figure means nothing and the target is missed."""
    skipped: str = ""
    """Not measured, and why (a baseline tool missing): neither met nor missed."""

    @property
    def ok(self) -> bool:
        if self.failed or self.skipped:
            return False
        if self.lower_bound:
            return self.op == ">=" and self.value >= self.limit
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    @property
    def verdict(self) -> str:
        return "SKIP" if self.skipped else "ok" if self.ok else "MISS"

    def line(self) -> str:
        if self.skipped:
            return f"SKIP: {self.what}: not measured ({self.skipped})"
        value = fmt(self.value)
        if value == fmt(self.limit) and self.value != self.limit:  # 256.4 is not 256
            value = f"{self.value:,.2f}"
        shown = f"{'> ' if self.lower_bound else ''}{value}{self.unit}"
        symbol = "≤" if self.op == "<=" else "≥"
        target = f"target {symbol} {fmt(self.limit)}{self.unit}"
        if self.target:
            target += f", {self.target}"
        if self.failed:
            reason = self.target if (self.limit, self.unit) == (0, "") else target
            return f"MISS: {self.what}: the measured run FAILED ({reason})"
        return f"{self.verdict}: {self.what}: {shown} ({target})"


def fmt(value: float) -> str:
    """Numbers as people read them: 3 significant digits, thousands separated."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.4f}"


def ratio_text(ours: float, theirs: float, *, lower_bound: bool = False) -> str:
    if theirs <= 0:
        return "n/a"
    return f"{'> ' if lower_bound else ''}{ours / theirs:.2f}x"


@dataclass
class Section:
    """One scenario's part of the report: printed as it is built, written as markdown."""

    name: str
    title: str
    stamp: str = ""
    blocks: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    quiet: bool = False

    def __post_init__(self) -> None:
        if not self.quiet:
            print(f"\n== {self.title} ==", flush=True)

    def say(self, text: str) -> None:
        """A line of context (sizes, what was compared, a note)."""
        print(f"  {text}", flush=True)
        self.blocks.append(text + "\n\n")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        cells = [[str(c) for c in headers]] + [[_cell(c)[:70] for c in row] for row in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        for i, row in enumerate(cells):
            print("  " + "  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                                   for j, (c, w) in enumerate(zip(row, widths, strict=True))))
            if i == 0:
                print("  " + "  ".join("-" * w for w in widths))
        md = ["| " + " | ".join(cells[0]) + " |",
              "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
        md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[1:]]
        self.blocks.append("\n" + "\n".join(md) + "\n\n")
        print(flush=True)

    def failures(self, *steps: object) -> None:
        """Say in full why a measured command failed (the table shows the start only)."""
        for step in steps:
            measured = getattr(step, "measured", None)
            if measured is not None and measured.rc != 0 and not measured.timed_out:
                self.say(f"`{measured.name}` failed (exit {measured.rc}): "
                         f"{measured.error_tail(2)}")

    def check(self, check: Check) -> Check:
        self.checks.append(check)
        line = check.line()
        if not self.quiet:
            print(f"  {line}", flush=True)
        self.blocks.append(f"- **{check.verdict}**:{line.split(':', 1)[1]}\n")
        return check

    def markdown(self) -> str:
        body = "".join(self.blocks)
        return (f"{BEGIN.format(name=self.name)}\n## {self.title}\n\n"
                f"{self.stamp}\n\n{body}\n{END.format(name=self.name)}\n")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# -- docs/benchmarks.md --------------------------------------------------------------------------

ORDER = ["summary", "documents", "tables", "backups", "memory", "fanout", "cli-startup",
         "method"]
CLI_STARTUP_PLACEHOLDER = (
    "## CLI start-up per command\n\n"
    "Filled by `bench/cli_startup.py` (not yet run on this machine). It replaces only what\n"
    "lies between this section's markers: `bench.report.replace_section(path, \"cli-startup\","
    " markdown)`.\n\n")


def read_sections(path: Path) -> dict[str, str]:
    """The sections of an existing file, by name (each with its markers)."""
    if not path.exists():
        return {}
    return {m.group("name"): m.group(0) if m.group(0).endswith("\n") else m.group(0) + "\n"
            for m in _SECTION.finditer(path.read_text(encoding="utf-8"))}


def replace_section(path: Path, name: str, markdown: str) -> None:
    """Put ``markdown`` (without markers) as section ``name`` of the file, keeping the rest:
    what another benchmark (bench/cli_startup.py) calls to fill its own section."""
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    block = f"{BEGIN.format(name=name)}\n{markdown.rstrip()}\n\n{END.format(name=name)}\n"
    pattern = re.compile(re.escape(BEGIN.format(name=name)) + r".*?"
                         + re.escape(END.format(name=name)) + r"\n?", re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block
    path.write_text(text, encoding="utf-8")


HEADER = ("# Benchmarks\n\n"
          "Written by `make bench` (`python -m bench`): do not edit by hand. Each section says\n"
          "when and on which machine it was measured; a run replaces the sections it measured\n"
          "and keeps the others. Targets are those of issue 10.\n\n")


def write_document(path: Path, machine_md: str, sections: list[Section]) -> None:
    """Rewrite ``path``: header, machine of this run, then every section in order."""
    kept = read_sections(path)
    new = {s.name: s.markdown() for s in sections}
    kept.update(new)
    kept.setdefault("cli-startup", f"{BEGIN.format(name='cli-startup')}\n"
                    f"{CLI_STARTUP_PLACEHOLDER}{END.format(name='cli-startup')}\n")
    kept["summary"] = _summary(kept)
    names = [n for n in ORDER if n in kept] + sorted(n for n in kept if n not in ORDER)
    text = HEADER + machine_md + "\n" + "\n".join(kept[n] for n in names)
    path.write_text(text, encoding="utf-8")


_CHECK_LINE = re.compile(r"^- \*\*(ok|MISS|SKIP)\*\*:.*$", re.MULTILINE)
_TITLE = re.compile(r"^## (.+)$", re.MULTILINE)
_STAMP = re.compile(r"^\*(Measured|Run) (.+?)[;.]", re.MULTILINE)


def _summary(sections: dict[str, str]) -> str:
    """Every verdict of every section in the file, in order, with when it was measured."""
    lines = ["## Summary: every target of issue 10", "",
             "Collected from the sections below (each says when and where it was measured).", ""]
    for name in [n for n in ORDER if n in sections] + sorted(
            n for n in sections if n not in ORDER):
        if name == "summary":
            continue
        body = sections[name]
        found = _CHECK_LINE.findall(body)
        if not found:
            continue
        title = _TITLE.search(body)
        stamp = _STAMP.search(body)
        lines.append(f"**{title.group(1) if title else name}** "
                     f"({stamp.group(2) if stamp else 'undated'})")
        lines.append("")
        lines += [m.group(0) for m in _CHECK_LINE.finditer(body)]
        lines.append("")
    text = "\n".join(lines)
    return f"{BEGIN.format(name='summary')}\n{text}\n{END.format(name='summary')}\n"

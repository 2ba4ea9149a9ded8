"""Safe, unique names for files inside the package and the ZIP parts.

A name must never escape the extraction directory nor break on a client's file system: no
absolute paths, no ``..``, no separators, no control characters, no characters Windows refuses,
NFC-normalised, unique without regard to case (Windows and macOS folders ignore case).
"""

from __future__ import annotations

import re
import unicodedata

_FORBIDDEN = re.compile(r'[\\/:*?"<>|]')
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
MAX_NAME_BYTES = 200


def safe_name(original: str, fallback: str) -> str:
    """A single path component derived from ``original``; ``fallback`` when nothing is left."""
    name = unicodedata.normalize("NFC", original)
    name = "".join(
        "_" if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch for ch in name
    )
    name = _FORBIDDEN.sub("_", name)
    name = re.sub(r"\.{2,}", ".", name).strip(" .")
    if not name or set(name) <= {"_"}:
        name = fallback
    if _WINDOWS_RESERVED.match(name):
        name = f"_{name}"
    return _truncate(name)


def _truncate(name: str) -> str:
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:
        stem, ext = name, ""
    budget = MAX_NAME_BYTES - len(ext.encode()) - (1 if ext else 0)
    cut = stem.encode()[:budget].decode(errors="ignore").rstrip(" .")
    return f"{cut}.{ext}" if ext else cut


class UniqueNames:
    """Hands out names unique within one package (case-insensitively): ``a.pdf``, ``a (2).pdf``."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def claim(self, original: str, fallback: str) -> str:
        """A safe name for ``original`` that no earlier claim received."""
        name = safe_name(original, fallback)
        candidate, n = name, 1
        while candidate.casefold() in self._used:
            n += 1
            stem, dot, ext = name.rpartition(".")
            candidate = f"{stem} ({n}).{ext}" if dot and stem else f"{name} ({n})"
        self._used.add(candidate.casefold())
        return candidate

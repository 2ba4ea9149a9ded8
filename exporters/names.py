"""Safe, unique names for files inside the package and the ZIP parts.

A name must never escape the extraction directory nor break on a client's file system: no
absolute paths, no ``..``, no separators, no control characters, no characters Windows refuses,
NFC-normalised, unique without regard to case (Windows and macOS folders ignore case).
"""

from __future__ import annotations

import re
import unicodedata

_FORBIDDEN = re.compile(r'[\\/:*?"<>|]')
_WINDOWS_RESERVED = re.compile(
    r"(con|prn|aux|nul|com[0-9\u00b9\u00b2\u00b3]|lpt[0-9\u00b9\u00b2\u00b3])(\..*)?",
    re.IGNORECASE,
)
DEFAULT_FALLBACK = "file"
MAX_NAME_BYTES = 200


def safe_name(original: str, fallback: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """A single path component derived from ``original``; ``fallback`` when nothing is left.

    The fallback goes through the same cleaning (it may embed an id from the database).
    """
    name = _clean(original)
    if not name:
        name = _clean(fallback) or DEFAULT_FALLBACK
    name = _truncate(name, max_bytes)
    if _WINDOWS_RESERVED.fullmatch(name):
        name = _truncate(f"_{name}", max_bytes)
    return name


def _clean(text: str) -> str:
    name = unicodedata.normalize("NFC", text)
    name = "".join(
        "_" if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch for ch in name
    )
    name = _FORBIDDEN.sub("_", name)
    name = re.sub(r"\.{2,}", ".", name).strip(" .")
    return "" if set(name) <= {"_"} else name


def _truncate(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    if len(name.encode()) <= max_bytes:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:
        stem, ext = name, ""
    budget = max_bytes - len(ext.encode()) - (1 if ext else 0)
    cut = stem.encode()[:budget].decode(errors="ignore").rstrip(" .")
    return f"{cut}.{ext}" if ext else cut


class UniqueNames:
    """Hands out names unique within one package (case-insensitively): ``a.pdf``, ``a (2).pdf``.

    The next number to try is kept per name, so the k-th document called ``scan.pdf`` costs one
    try, not k (a tenant with thousands of same-named uploads made the ZIP writer quadratic).
    """

    def __init__(self) -> None:
        self._used: set[str] = set()
        self._last: dict[str, int] = {}  # per taken name: the highest suffix number tried

    def claim(self, original: str, fallback: str) -> str:
        """A safe name for ``original`` that no earlier claim received."""
        name = safe_name(original, fallback)
        key = name.casefold()
        if key not in self._used:
            self._used.add(key)
            return name
        # Every number up to the last one tried for this name is taken (names are never given
        # back), so the first free one comes after it, as counting from 2 would find. (Not
        # always the same number: two spellings of one name whose case-folding changes their
        # length, cut differently near the byte limit, may skip one. Still unique and safe.)
        n, short, room = self._last.get(key, 1), name, -1
        while True:
            n += 1
            suffix = f" ({n})"
            if len(suffix) != room:  # the room left for the name changes with the digits only
                room = len(suffix)
                short = safe_name(original, fallback, MAX_NAME_BYTES - room)
            stem, dot, ext = short.rpartition(".")
            candidate = f"{stem}{suffix}.{ext}" if dot and stem else f"{short}{suffix}"
            if candidate.casefold() not in self._used:
                break
        self._last[key] = n
        self._used.add(candidate.casefold())
        return candidate

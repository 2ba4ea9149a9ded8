"""exporters.names: safe, NFC, unique-without-case names for files inside the package (§3.4)."""

from __future__ import annotations

import random
import re
import unicodedata

import pytest

import exporters.names as module
from exporters.names import MAX_NAME_BYTES, UniqueNames, safe_name

FALLBACK = "document-42"
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)

NASTY: list[str] = [
    "/etc/passwd", "/", "//server/share/x.pdf", "../../etc/passwd", "a/../../b.txt", "..",
    "...", "a..b", "x/..", "..\\..\\windows\\system32", "a\\b\\c.doc", "C:\\Users\\x.pdf",
    "C:", "d:relative.txt", "\\\\?\\C:\\long", "a\x00b.pdf", "\x00", "\x1f\x01\x7f",
    "tab\there.txt", "new\nline.txt", "cr\rname", "\u202etxt.exe", "rtl\u202egpj.exe",
    "zero\u200bwidth", "\ufeffbom.txt", "line\u2028sep", "para\u2029sep", "nel\u0085x",
    "CON", "con", "nul.txt", "NUL.tar.gz", "COM1", "com9.log", "LPT1.txt", "prn", "aux.c",
    "e\u0301te\u0301.txt", "A\u030a.txt", "\u00c5.txt", "", " ", "   ", ".", ". .", " . . ",
    "___", "\x00\x00", '<>:"|?*', "name. ", " lead.txt", "trail.txt.", "ok.pdf", "OK.PDF",
    "ok.pdf", "Straße.txt", "STRASSE.TXT", "\ud800lone", "é" * 150 + ".pdf",
    "x" * 300 + ".pdf", "y" * 1000, "日本語" * 40 + ".docx", "😀" * 80 + ".png",
    "a:b*c?d\"e<f>g|h", "..hidden", ".bashrc", "a" + "\u0301" * 5,
]


def _assert_safe(name: str) -> None:
    assert name, "empty name"
    assert "/" not in name
    assert "\\" not in name
    assert ".." not in name
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in name), name
    assert not any(ch in '<>:"|?*' for ch in name), name
    assert unicodedata.normalize("NFC", name) == name
    assert name == name.strip(" ."), f"leading/trailing space or dot in {name!r}"


@pytest.mark.parametrize(
    "original",
    ["/etc/passwd", "/abs/dir/file.txt", "//host/share/f", "\\\\host\\share\\f", "/"],
)
def test_absolute_paths_become_a_single_relative_component(original: str) -> None:
    name = safe_name(original, FALLBACK)
    _assert_safe(name)
    assert not name.startswith(("/", "\\"))


@pytest.mark.parametrize(
    "original",
    ["..", "../x", "x/..", "a/../b", "..\\..\\x", "a..b", "a...b.txt", "....pdf", "x.. .."],
)
def test_dot_dot_never_survives(original: str) -> None:
    assert ".." not in safe_name(original, FALLBACK)


def test_dot_dot_collapses_inside_a_name() -> None:
    assert safe_name("a..b", FALLBACK) == "a.b"
    assert safe_name("report...final.pdf", FALLBACK) == "report.final.pdf"


def test_backslashes_and_drive_letters() -> None:
    assert safe_name("a\\b\\c.doc", FALLBACK) == "a_b_c.doc"
    assert safe_name("C:\\Users\\me\\x.pdf", FALLBACK) == "C__Users_me_x.pdf"
    assert safe_name("d:rel.txt", FALLBACK) == "d_rel.txt"
    assert ":" not in safe_name("C:", FALLBACK)


@pytest.mark.parametrize("code", [*range(0x00, 0x20), 0x7F])
def test_ascii_control_characters_are_replaced(code: int) -> None:
    name = safe_name(f"a{chr(code)}b.txt", FALLBACK)
    assert name == "a_b.txt"


def test_bidi_override_and_invisible_format_characters_are_replaced() -> None:
    assert safe_name("invoice\u202efdp.exe", FALLBACK) == "invoice_fdp.exe"
    assert safe_name("zero\u200bwidth", FALLBACK) == "zero_width"
    assert safe_name("\ufeffbom.txt", FALLBACK) == "_bom.txt"


@pytest.mark.parametrize(
    ("original", "expected"),
    [("CON", "_CON"), ("con", "_con"), ("nul.txt", "_nul.txt"), ("COM1", "_COM1"),
     ("LPT9.log", "_LPT9.log"), ("aux.tar.gz", "_aux.tar.gz"), ("PRN", "_PRN")],
)
def test_windows_reserved_names_are_prefixed(original: str, expected: str) -> None:
    assert safe_name(original, FALLBACK) == expected


def test_names_merely_starting_with_a_reserved_word_are_kept() -> None:
    assert safe_name("console.txt", FALLBACK) == "console.txt"
    assert safe_name("nully", FALLBACK) == "nully"


@pytest.mark.parametrize("original", ["COM¹", "lpt².txt"])
def test_windows_reserved_superscript_digits(original: str) -> None:
    assert not _RESERVED.match(safe_name(original, FALLBACK))


def test_nfd_is_normalised_to_nfc() -> None:
    nfd = "e\u0301te\u0301.txt"
    name = safe_name(nfd, FALLBACK)
    assert name == "\u00e9t\u00e9.txt"
    assert unicodedata.is_normalized("NFC", name)


@pytest.mark.parametrize("original", ["", " ", "   ", ".", "..", "...", ". .", " . . ", "___",
                                      "\x00", "\x00\x01", "/", "\\", "\u202e", "//"])
def test_empty_or_meaningless_names_use_the_fallback(original: str) -> None:
    assert safe_name(original, FALLBACK) == FALLBACK


def test_leading_and_trailing_dots_and_spaces_are_stripped() -> None:
    assert safe_name("  report.pdf. ", FALLBACK) == "report.pdf"
    assert safe_name(".bashrc", FALLBACK) == "bashrc"


@pytest.mark.parametrize(
    ("original", "ext"),
    [("x" * 300 + ".pdf", "pdf"), ("é" * 150 + ".pdf", "pdf"), ("日本語" * 40 + ".docx", "docx"),
     ("😀" * 80 + ".png", "png"), ("y" * 1000, "")],
)
def test_long_names_are_truncated_to_200_bytes_keeping_the_extension(original: str,
                                                                     ext: str) -> None:
    name = safe_name(original, FALLBACK)
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert len(name.encode()) > MAX_NAME_BYTES - 4  # cut at the limit, not far below it
    if ext:
        assert name.endswith("." + ext)
        assert original.startswith(name[: -len(ext) - 1])
    _assert_safe(name)


def test_long_name_with_huge_extension_is_cut_as_a_whole() -> None:
    name = safe_name("a." + "b" * 300, FALLBACK)
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert name.startswith("a.b")


def test_truncation_cannot_produce_a_reserved_name() -> None:
    name = safe_name("CON" + " " * 300 + "x", FALLBACK)
    assert not _RESERVED.match(name), name


def test_short_names_are_unchanged() -> None:
    for original in ["ok.pdf", "Résumé 2024 (final).docx", "a b c", "日本語.txt", "x"]:
        assert safe_name(original, FALLBACK) == original


def test_claim_is_unique_without_regard_to_case() -> None:
    names = UniqueNames()
    got = [names.claim(n, FALLBACK) for n in ["a.pdf", "A.PDF", "a.pdf"]]
    assert got == ["a.pdf", "A (2).PDF", "a (3).pdf"]
    assert len({g.casefold() for g in got}) == 3


def test_claim_without_extension_and_suffix_collisions() -> None:
    names = UniqueNames()
    assert names.claim("a (2).pdf", FALLBACK) == "a (2).pdf"
    assert names.claim("a.pdf", FALLBACK) == "a.pdf"
    assert names.claim("a.pdf", FALLBACK) == "a (3).pdf"
    assert names.claim("README", FALLBACK) == "README"
    assert names.claim("readme", FALLBACK) == "readme (2)"


def test_claim_fallbacks_are_also_unique() -> None:
    names = UniqueNames()
    assert names.claim("", "doc") == "doc"
    assert names.claim("..", "doc") == "doc (2)"
    assert names.claim("doc", "other") == "doc (3)"


def test_claim_nfc_and_nfd_spellings_collide() -> None:
    names = UniqueNames()
    first = names.claim("\u00e9.txt", FALLBACK)
    second = names.claim("e\u0301.txt", FALLBACK)
    assert first != second
    assert first.casefold() != second.casefold()


def test_claim_keeps_duplicate_long_names_within_the_byte_limit() -> None:
    names = UniqueNames()
    long = "x" * 300 + ".pdf"
    first, second = names.claim(long, FALLBACK), names.claim(long, FALLBACK)
    assert first != second
    assert len(second.encode()) <= MAX_NAME_BYTES


def test_fallback_is_sanitised_too() -> None:
    _assert_safe(safe_name("", "document-../../etc/x"))


def test_property_invariants_over_nasty_strings() -> None:
    names = UniqueNames()
    claimed: list[str] = []
    for original in NASTY:
        name = safe_name(original, FALLBACK)
        _assert_safe(name)
        assert len(name.encode()) <= MAX_NAME_BYTES, original
        assert not _RESERVED.match(name), name
        assert safe_name(name, FALLBACK) == name, f"not idempotent for {original!r}"
        claimed.append(names.claim(original, FALLBACK))
    for name in claimed:
        _assert_safe(name)
    assert len({c.casefold() for c in claimed}) == len(claimed)


def _claim_by_counting_from_two(used: set[str], original: str, fallback: str) -> str:
    """The algorithm before names kept their last number: try (2), (3), ... every time."""
    name = safe_name(original, fallback)
    candidate, n = name, 1
    while candidate.casefold() in used:
        n += 1
        suffix = f" ({n})"
        short = safe_name(original, fallback, MAX_NAME_BYTES - len(suffix))
        stem, dot, ext = short.rpartition(".")
        candidate = f"{stem}{suffix}.{ext}" if dot and stem else f"{short}{suffix}"
    used.add(candidate.casefold())
    return candidate


def test_claim_gives_the_names_counting_from_two_gave() -> None:
    """Same names as before for every kind of collision: case, literal "(n)" names taken
    first, fallbacks, long names whose suffix needs more room past 9, README without a dot."""
    rng = random.Random(10)
    pool = ["scan.pdf", "SCAN.PDF", "scan (3).pdf", "scan (12).pdf", "", "..", "README",
            "readme (2)", "x" * 300 + ".pdf", "é.txt", "e\u0301.txt", "a.b.c", "con.txt"]
    originals = [rng.choice(pool) for _ in range(3000)]
    names, used = UniqueNames(), set[str]()
    got = [names.claim(o, "doc") for o in originals]
    assert got == [_claim_by_counting_from_two(used, o, "doc") for o in originals]
    assert len({g.casefold() for g in got}) == len(got)


def test_the_kth_same_named_document_costs_one_try_not_k(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = [0]
    real = module.safe_name

    def counted(*args: object) -> str:
        calls[0] += 1
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "safe_name", counted)
    names = module.UniqueNames()
    got = [names.claim("scan.pdf", "doc") for _ in range(5000)]
    assert got[:3] == ["scan.pdf", "scan (2).pdf", "scan (3).pdf"]
    assert got[-1] == "scan (5000).pdf"
    assert calls[0] <= 2 * 5000 + 10  # counting from 2 each time: about 12.5 million

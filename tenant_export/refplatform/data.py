"""Value pools of the reference platform, awkward values included on purpose.

Every pool is cycled by a row's index within its tenant, so the tiny platform already holds each
awkward value (multi-line text, quotes, commas, formula-like text, non-ASCII, '' next to NULL,
leading zeros) and a benchmark-sized one holds them many times over.
"""

from __future__ import annotations

import re
import unicodedata

NAMED_TENANTS = [
    ("harbour-rowing", "Harbour Rowing Club e.V."),
    ("chess-club", "Schachfreunde Mainz"),
    ("choir", "Chœur « La Lyre », Trier"),
]
LOCALES = ["en", "de", "fr"]

COUNTRIES = [
    ("DE", "Germany"), ("FR", "France"), ("CH", "Switzerland"), ("AT", "Austria"),
    ("GB", "United Kingdom"), ("CI", "C\u00f4te d\u2019Ivoire"), ("NL", "Netherlands"),
    ("US", "United States"),
]
PLANS = [(1, "Free", "0.00", 25), (2, "Association", "9.90", 500), (3, "Federation", "49.00", None)]
CURRENCIES = [("EUR", "Euro", 2), ("CHF", "Swiss franc", 2), ("JPY", "Yen", 0)]

FIRST = ["Anna", "Jean-Luc", "李", "Zoë", "Åsa", "Mia", "Lukas", "Chloé", "Noah", "Ólafur",
         "Sofia", "Ben", "Zeynep", "Mateo", "O'Neil"]
LAST = ["Müller", "Ørsted", "小龍", "O'Brien", "Nyström", "Schmidt", "Dubois", "Rossi",
        "Nowak", "Garcia", "Smith", "Weiß", "Kowalczyk", "van der Berg", "Łukasiewicz"]
NOTES: list[str | None] = [
    None, "", 'Captain; "coach" since 2022', "line one\nline two\r\nline three", "=1+1",
    "a, b, c", "Zoë — ünïcödé 日本語 🎉", " spaced ", "@SUM(A1)", "-5", "tab\there", "NULL",
]
POSTCODES: list[str | None] = ["01067", "55116", "75001", "8001", "", None, "SW1A 1AA", "1010"]
COUNTRY_CODES: list[str | None] = ["DE", "FR", "CH", "AT", "GB", None, "DE", "CI"]
STATUSES = ["active"] * 7 + ["suspended", "active", "left"]

VENUES = ["Clubhouse", "Rhine, km 498", "Café Extrablatt", "Salle des fêtes", 'The "Boathouse"']
ADDRESSES: list[str | None] = [
    "Hafenstraße 1\n55118 Mainz", "Quai 3\r\n75001 Paris", None, "", "Bahnhofstr. 7, 8001 Zürich",
]
EVENT_TITLES = ["Spring regatta", "Annual general meeting", "Blitz night", "Rehearsal",
                'Concert "Messiah"', "Training, beginners", "Sommerfest 🎉", "=1+1 quiz"]
LABELS = ["outdoor", "members only", 'quote"d', "comma,sep", "{braces}", "ünï", "", "NULL"]

POST_TITLES = ["Welcome", "Results, finally", 'The "new" boat', "Änderungen im Kalender",
               "=HYPERLINK(\"http://example.org\")", "Agenda"]
POST_BODIES: list[str | None] = [
    "Hello, rowers!\r\nSee you on the water.", "Line one\nLine two\n\nLine four", None, "",
    'He said "ahoy", then left.', "Zählt: 1, 2, 3 — ça marche ✓",
]
COMMENT_BODIES = ["+1", "Great, thanks!", "Reply:\n> quoted\nanswer", "ça va ?", '"quoted"', "-"]
EMOJIS = ["👍", "❤️", "😂", "🎉", "+1"]
GROUP_NAMES = ["Board", "Juniors", "Masters, 50+", "Tenors", "Volunteers", "Ärzteteam"]
ROLES = ["member", "member", "chair", "treasurer"]
TAG_NAMES = ["Regatta", "training", "Élan", "members-only", "Q&A", "a,b", "Concert", "news"]
COLORS: list[str | None] = ["#ff0000", "#00aa00", None, "", "blue"]
CAPTIONS: list[str | None] = ["Minutes attached", None, "", "Photo, page 2", 'See "annex"']
METHODS = ["card", "sepa", "cash", "paypal"]
ACTIONS = ["login", "logout", "profile.update", "event.register", "document.upload"]
LINE_ITEMS = ["Membership fee 2026", "Boat rental, 2 h", 'Jersey "Club", size M',
              "Repas du gala", "Startgeld Regatta"]
VAT_RATES = ["19.00", "7.00", "0.00", "20.00"]
SETTINGS: list[tuple[str, str | None]] = [
    ("theme", "dark"), ("locale.fallback", None), ("newsletter.footer", "Cheers,\nThe board"),
]

# Document n == 1 of every tenant is empty.bin with an empty blob; n >= 2 cycle through
# AWKWARD_FILES three per tenant, so the tiny platform (4 documents) spreads them over its 3
# tenants and keeps the case-only duplicates (Report.PDF / report.pdf) inside one tenant.
AWKWARD_FILES = [
    "../../etc/passwd", "CON.txt", "Minutes 2026-01.pdf",
    "Report.PDF", "report.pdf", "Agenda.docx",
    "Cafe\u0301 menu.txt", "tab\tand\nnewline.txt", "photo.jpg",
    'budget, final "v2".xlsx', "Zoë's list.csv", "notes.txt",
    "=1+1.csv", "長い名前の文書.docx", "", "C:\\evil\\name.txt",
]
CONTENT_TYPES = {
    "pdf": "application/pdf", "txt": "text/plain", "jpg": "image/jpeg", "csv": "text/csv",
    "bin": "application/octet-stream",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def document_filename(tenant_index: int, n: int, per_tenant: int) -> str:
    """The filename of a tenant's n-th document (1-based): a pure function, so blob keys can
    be listed again later without keeping them."""
    if n == 1:
        return "empty.bin"
    return AWKWARD_FILES[(tenant_index * max(per_tenant - 1, 1) + n - 2) % len(AWKWARD_FILES)]


def content_type(filename: str) -> str | None:
    return CONTENT_TYPES.get(filename.rpartition(".")[2].lower()) if "." in filename else None


def slug(name: str) -> str:
    """An object-key-safe rendering of a filename (ASCII letters, digits, '.', '-')."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9.]+", "-", folded).strip("-.")[:40] or "file"

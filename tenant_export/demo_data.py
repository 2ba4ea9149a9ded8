"""A small association-management platform in SQLite, for the demo.

Three tenants (clubs) with members, events, posts and uploaded documents, including the awkward
filenames real uploads have: path separators, reserved Windows names, NFD accents, duplicates,
control characters; and one document whose blob was lost, to show ``status = missing``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL, plan TEXT, created_at TEXT);
CREATE TABLE members (
    id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id),
    full_name TEXT NOT NULL, email TEXT, phone TEXT, joined_on TEXT, fee_eur NUMERIC,
    password_hash TEXT, notes TEXT
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, title TEXT, starts_at TEXT,
    location TEXT, capacity INTEGER
);
CREATE TABLE posts (
    id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, author_id INTEGER, title TEXT, body TEXT,
    published_at TEXT
);
CREATE TABLE documents (
    id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, filename TEXT NOT NULL,
    storage_key TEXT NOT NULL, content_type TEXT, uploaded_at TEXT
);
CREATE TABLE platform_settings (key TEXT PRIMARY KEY, value TEXT);
"""

TENANTS = [
    ("harbour-rowing", "Harbour Rowing Club e.V.", "association", "2021-03-14T09:30:00+01:00"),
    ("chess-club", "Schachfreunde Mainz", "association", "2022-11-02T18:00:00+01:00"),
    ("choir", "Kammerchor Trier", "basic", "2023-05-20T12:00:00+02:00"),
]

MEMBERS = [
    ("harbour-rowing", "Anna Müller", "anna@example.org", "+49 6131 000000", "2021-04-01", 60,
     "$argon2id$v=19$demo", "Captain; \"coach\" since 2022"),
    ("harbour-rowing", "Jean-Luc Ørsted", None, "", "2022-01-15", 42.5, "$argon2id$v=19$demo",
     "=HYPERLINK(\"http://example.org\")"),
    ("harbour-rowing", "李 小龍", "li@example.org", None, "2023-09-09", 0, None,
     "line one\nline two"),
    ("chess-club", "Magnus K.", "magnus@example.org", None, "2022-11-03", 30, None, None),
    ("choir", "Clara S.", "clara@example.org", None, "2023-06-01", 24, None, "@alto"),
]

EVENTS = [
    ("harbour-rowing", "Spring regatta", "2026-04-18T09:00:00+02:00", "Rhine, km 498", 40),
    ("harbour-rowing", "Annual general meeting", "2026-03-06T19:30:00+01:00", "Clubhouse", None),
    ("chess-club", "Blitz night", "2026-02-12T19:00:00+01:00", "Café Extrablatt", 24),
]

POSTS = [
    ("harbour-rowing", 1, "Welcome", "Hello, rowers!\r\nSee you on the water.",
     "2026-01-02T08:00:00Z"),
    ("harbour-rowing", 2, "", "", None),
    ("choir", 5, "Rehearsal", "Bring your scores.", "2026-01-05T18:00:00+01:00"),
]

# (tenant, filename, storage key, content or None when the blob is lost)
DOCUMENTS: list[tuple[str, str, str, bytes | None]] = [
    ("harbour-rowing", "Satzung 2026.pdf", "hr/0001", b"%PDF-1.7\n% statutes\n" * 200),
    ("harbour-rowing", "../../etc/passwd", "hr/0002", b"not what you think\n"),
    ("harbour-rowing", "Protokoll: JHV 2026?.docx", "hr/0003", bytes(range(256)) * 64),
    ("harbour-rowing", "CON.txt", "hr/0004", b"reserved name on Windows\n"),
    ("harbour-rowing", "Cafe\u0301 budget.xlsx", "hr/0005", b"NFD accent in the name\n"),
    ("harbour-rowing", "photo.jpg", "hr/0006", b"\xff\xd8\xff\xe0 first photo"),
    ("harbour-rowing", "PHOTO.JPG", "hr/0007", b"\xff\xd8\xff\xe0 second photo, same name"),
    ("harbour-rowing", "tab\tand\nnewline.txt", "hr/0008", b""),
    ("harbour-rowing", "lost-receipt.pdf", "hr/0009", None),
    ("chess-club", "Turnierordnung.pdf", "cc/0001", b"%PDF-1.4 rules"),
    ("choir", "Noten \u2013 Ave verum.pdf", "ch/0001", b"%PDF-1.5 scores"),
]


def create_platform(path: Path) -> dict[str, bytes]:
    """Create (replace) the demo database at ``path``; returns the blobs to upload by key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    blobs: dict[str, bytes] = {}
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        db.executemany("INSERT INTO tenants VALUES (?, ?, ?, ?)", TENANTS)
        db.executemany(
            "INSERT INTO members (tenant_id, full_name, email, phone, joined_on, fee_eur, "
            "password_hash, notes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", MEMBERS)
        db.executemany(
            "INSERT INTO events (tenant_id, title, starts_at, location, capacity) "
            "VALUES (?, ?, ?, ?, ?)", EVENTS)
        db.executemany(
            "INSERT INTO posts (tenant_id, author_id, title, body, published_at) "
            "VALUES (?, ?, ?, ?, ?)", POSTS)
        for tenant, filename, key, content in DOCUMENTS:
            db.execute(
                "INSERT INTO documents (tenant_id, filename, storage_key, content_type, "
                "uploaded_at) VALUES (?, ?, ?, ?, ?)",
                (tenant, filename, key, "application/octet-stream", "2026-01-10T12:00:00Z"))
            if content is not None:
                blobs[key] = content
        db.execute("INSERT INTO platform_settings VALUES ('smtp_password', 'never exported')")
    return blobs


DEMO_CATALOG = """\
# Demo catalog: password hashes never leave the platform.
tenant_column = "tenant_id"

[tables.members]
exclude_columns = ["password_hash"]

[tables.platform_settings]
shared = true
reason = "platform configuration (SMTP password): never leaves"

[documents]
table = "documents"
key_column = "storage_key"
name_column = "filename"
keys_tenant_scoped = false   # demo keys (hr/0001, ...) are not under a per-tenant folder
"""

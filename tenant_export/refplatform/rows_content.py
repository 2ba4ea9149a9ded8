"""Rows of posts and their comment tree, groups and tags with their join tables (and the
cross-tenant anomalies), documents with their blobs, invoices and the activity log."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from .blobs import blob_content, blob_size, document_key
from .data import (
    ACTIONS,
    CAPTIONS,
    COLORS,
    COMMENT_BODIES,
    CURRENCIES,
    EMOJIS,
    GROUP_NAMES,
    LINE_ITEMS,
    POST_BODIES,
    POST_TITLES,
    ROLES,
    TAG_NAMES,
    content_type,
    document_filename,
)
from .model import CROSS, EPOCH_2025_07, YEAR, Model, Owned, cents

DETAILS = [json.dumps(d, ensure_ascii=False) for d in (
    {"ip": "192.0.2.1", "ua": "Mozilla/5.0 (X11; Linux x86_64)"},
    {"changed": ["email", "phone"], "old": {"phone": ""}, "new": {"phone": None}},
    {"document": "../../etc/passwd", "bytes": 0, "ok": True},
)]
VAT = [19, 7, 0, 20]


def posts(m: Model) -> Owned:
    for i, j, id_ in m.per_tenant("posts", m.spec.posts_per_tenant):
        yield i, (id_, m.tenants[i], None if (i + j) % 4 == 3 else m.pick("members", i),
                  POST_TITLES[(i + j) % len(POST_TITLES)], POST_BODIES[j % len(POST_BODIES)],
                  None if (i + j) % 6 == 5 else m.stamp(), j == 0)


def comments(m: Model) -> Owned:
    """Replies point to an earlier comment of the same post (``parent_id``, self-reference)."""
    rng, high = m.rng, 2 * m.spec.fanout
    current, thread = 0, list[int]()
    for i, post, id_, _ in m.children("comments", "posts",
                                      lambda first: max(2 * first, rng.randint(0, high))):
        if post != current:
            current, thread = post, []
        parent = None  # the second comment of a post always replies, later ones sometimes
        if thread and (len(thread) == 1 or rng.random() < 0.4):
            parent = thread[rng.randrange(len(thread))]
        thread.append(id_)
        yield i, (id_, post, parent, m.pick("members", i, none_one_in=5),
                  COMMENT_BODIES[id_ % len(COMMENT_BODIES)], m.stamp())


def comment_reactions(m: Model) -> Owned:
    rng, high = m.rng, m.spec.fanout
    for i, comment, id_, _ in m.children("comment_reactions", "comments",
                                         lambda first: max(int(first), rng.randint(0, high))):
        yield i, (id_, comment, EMOJIS[rng.randrange(len(EMOJIS))], m.stamp())


def groups(m: Model) -> Owned:
    for i, j, id_ in m.per_tenant("groups", m.spec.groups_per_tenant):
        suffix = f" {j // len(GROUP_NAMES) + 1}" if j >= len(GROUP_NAMES) else ""
        yield i, (id_, m.tenants[i], GROUP_NAMES[j % len(GROUP_NAMES)] + suffix,
                  (None, "", "Meets on Tuesdays,\n7 pm")[j % 3])


def group_members(m: Model) -> Owned:
    rng = m.rng
    for i, members in enumerate(m.ranges["members"]):
        group_ids = m.ranges["groups"][i]
        for member in members:
            count = min(len(group_ids), max(int(member == members.start), rng.randint(0, 2)))
            for group in sorted(rng.sample(group_ids, count)):
                yield i, (group, member, ROLES[rng.randrange(len(ROLES))],
                          None if member % 4 == 3 else m.day())
    if m.anomalies and len(m.tenants) > 1 and m.ranges["groups"][0] and m.ranges["members"][1]:
        # a group of tenant 0 listing a member of tenant 1: exported to nobody
        yield CROSS, (m.ranges["groups"][0][0], m.ranges["members"][1][0], "member", None)


def tags(m: Model) -> Owned:
    for i, j, id_ in m.per_tenant("tags", m.spec.tags_per_tenant):
        name = TAG_NAMES[j] if j < len(TAG_NAMES) else f"tag-{j}"
        yield i, (id_, m.tenants[i], name, COLORS[j % len(COLORS)])


def post_tags(m: Model) -> Owned:
    rng = m.rng
    for i, post_ids in enumerate(m.ranges["posts"]):
        tag_ids = m.ranges["tags"][i]
        for post in post_ids:
            high = min(3, len(tag_ids))
            count = max(int(post == post_ids.start and high > 0), rng.randint(0, high))
            for tag in sorted(rng.sample(tag_ids, count)):
                yield i, (post, tag)
    if m.anomalies and len(m.tenants) > 1 and m.ranges["posts"][0] and m.ranges["tags"][1]:
        # a post of tenant 0 tagged with a tag of tenant 1: exported to nobody
        yield CROSS, (m.ranges["posts"][0][0], m.ranges["tags"][1][0])


def documents(m: Model) -> Owned:
    """Document n == 1 has an empty blob; with anomalies the last one's blob is never uploaded
    (also in the schema-per-tenant layout: it is not a row anomaly)."""
    spec, count = m.spec, m.spec.documents_per_tenant
    for i, j, id_ in m.per_tenant("documents", count):
        name = document_filename(i, j + 1, count)
        key = document_key(m.tenants[i], j + 1, name)
        if spec.anomalies and j + 1 == count >= 2:
            m.missing_blobs.append(key)
        elif spec.track_truth:
            m.blobs[key] = blob_content(spec.seed, spec.blob_bytes, key)
        yield i, (id_, m.tenants[i], name, key, content_type(name),
                  blob_size(spec.seed, spec.blob_bytes, key), m.stamp())


def attachments(m: Model) -> Owned:
    """``post_id`` and ``document_id`` carry no foreign key: only the catalog declares them."""
    rng = m.rng
    for i, document_ids in enumerate(m.ranges["documents"]):
        for document in document_ids:
            if document == document_ids.start or rng.random() < 0.5:
                post = m.pick("posts", i)
                if post is not None:
                    id_ = m.new_id("attachments")
                    yield i, (id_, post, document, CAPTIONS[id_ % len(CAPTIONS)])


def _lines(m: Model, invoice: int) -> list[tuple[str, int, int, int]]:
    """An invoice's lines from their own RNG, so the invoice total is known before its lines."""
    rng = random.Random(m.spec.seed * 1_000_003 + invoice)  # noqa: S311 (test data)
    return [(LINE_ITEMS[rng.randrange(len(LINE_ITEMS))], rng.randint(1, 3),
             rng.randrange(100, 9_000), VAT[rng.randrange(len(VAT))])
            for _ in range(rng.randint(1, 2 * m.spec.fanout - 1))]


def invoices(m: Model) -> Owned:
    for i, j, id_ in m.per_tenant("invoices", m.spec.invoices_per_tenant):
        total = sum(qty * unit * (100 + vat) // 100 for _, qty, unit, vat in _lines(m, id_))
        status = ("paid", "open", "overdue", "void")[j % 4]
        issued = m.day()
        yield i, (id_, m.tenants[i], m.pick("members", i, none_one_in=4),
                  f"{issued[:4]}-{j + 1:05d}", issued, None if j % 5 == 4 else m.day(),
                  CURRENCIES[0 if j % 5 else 1][0], cents(total), status, status == "paid")


def invoice_lines(m: Model) -> Owned:
    for i, invoice_ids in enumerate(m.ranges["invoices"]):
        for invoice in invoice_ids:
            for position, (text, qty, unit, vat) in enumerate(_lines(m, invoice), 1):
                yield i, (m.new_id("invoice_lines"), invoice, position, text, qty, cents(unit),
                          f"{vat}.00")


def activity_log(m: Model) -> Owned:
    """A year of activity, one partition per month on PostgreSQL; the first two rows of each
    tenant sit on month boundaries (23:30 at -01:00 is already February in UTC)."""
    rng = m.rng
    for i, j, id_ in m.per_tenant("activity_log", m.spec.activity_per_tenant):
        at = ("2026-01-31T23:30:00-01:00" if j == 0 else "2026-03-01T00:00:00+00:00" if j == 1
              else m.stamp(EPOCH_2025_07, YEAR))
        yield i, (id_, m.tenants[i], m.pick("members", i, none_one_in=5), at,
                  ACTIONS[rng.randrange(len(ACTIONS))], None if j % 4 == 3 else DETAILS[j % 3])


GENERATORS: dict[str, Callable[[Model], Owned]] = {
    "posts": posts, "comments": comments, "comment_reactions": comment_reactions,
    "groups": groups, "group_members": group_members, "tags": tags, "post_tags": post_tags,
    "documents": documents, "attachments": attachments, "invoices": invoices,
    "invoice_lines": invoice_lines, "activity_log": activity_log,
}

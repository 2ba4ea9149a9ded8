"""Rows of the shared lookups, tenants, members and the event chain (registrations, payments,
refunds: foreign-key depth 1, 2 and 3 below a tenant-column table), with the orphan anomaly."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, tzinfo

from .data import (
    ADDRESSES,
    COUNTRIES,
    COUNTRY_CODES,
    CURRENCIES,
    EVENT_TITLES,
    FIRST,
    LABELS,
    LAST,
    LOCALES,
    METHODS,
    NAMED_TENANTS,
    NOTES,
    PLANS,
    POSTCODES,
    SETTINGS,
    STATUSES,
    VENUES,
)
from .model import ORPHAN, SHARED, TZS, Model, Owned, cents

ORPHAN_AT = "2026-02-28T12:00:00+01:00"
_PROFILES: list[dict[str, object]] = [
    {"newsletter": True, "size": "M", "langs": ["de", "en"]},
    {"nick": 'O\'Neil "Captain"', "emoji": "🎉", "note": "a,b\nc"},
    {"newsletter": False, "size": None, "langs": []},
]
PROFILES = [json.dumps(p, ensure_ascii=False) for p in _PROFILES]


def countries(_: Model) -> Owned:
    return ((SHARED, row) for row in COUNTRIES)


def plans(_: Model) -> Owned:
    return ((SHARED, row) for row in PLANS)


def currencies(_: Model) -> Owned:
    return ((SHARED, row) for row in CURRENCIES)


def tenants(m: Model) -> Owned:
    for i, tenant in enumerate(m.tenants):
        name = NAMED_TENANTS[i][1] if i < len(NAMED_TENANTS) else f"Verein {i + 1:04d}"
        yield i, (tenant, name, 1 + i % 3, LOCALES[i % 3], m.stamp())


def tenant_settings(m: Model) -> Owned:
    for i, tenant in enumerate(m.tenants):
        for key, value in SETTINGS:
            yield i, (tenant, key, value)


def members(m: Model) -> Owned:
    rng = m.rng
    for i, j, id_ in m.per_tenant("members", m.spec.members_per_tenant):
        email = None if j % 6 == 5 else f"member{id_}@example.org"
        yield i, (
            id_, m.tenants[i], f"{i + 1:04d}{id_:016d}",
            f"{FIRST[rng.randrange(len(FIRST))]} {LAST[rng.randrange(len(LAST))]}",
            email.upper() if email and j == 0 else email,  # citext: case-insensitive
            (None, "", f"+49 6131 {id_:06d}")[j % 3], STATUSES[j % 10], COUNTRY_CODES[j % 8],
            POSTCODES[j % 8], f"$argon2id$v=19$m=65536,t=3,p=4${rng.getrandbits(96):024x}",
            m.day(), j < 2, None if j % 7 == 6 else m.money(), NOTES[j % len(NOTES)],
            None if j % 4 == 3 else PROFILES[j % 3],
        )


def venues(m: Model) -> Owned:
    for i, j, id_ in m.per_tenant("venues", m.spec.venues_per_tenant):
        yield i, (id_, m.tenants[i], VENUES[j % len(VENUES)], ADDRESSES[j % len(ADDRESSES)],
                  POSTCODES[j % 8], COUNTRY_CODES[j % 8],
                  None if j % 3 == 2 else m.rng.randint(10, 500))


def events(m: Model) -> Owned:
    rng = m.rng
    for i, j, id_ in m.per_tenant("events", m.spec.events_per_tenant):
        start = 1_748_736_000 + rng.randrange(580 * 86_400)  # 2025-06-01 .. 2026-12
        tz = TZS[rng.randrange(len(TZS))]
        kind = (i + j) % 4  # cycles shifted per tenant: tiny tenants differ
        labels = None if kind == 2 else [] if kind == 3 else rng.sample(LABELS, rng.randint(1, 3))
        yield i, (
            id_, m.tenants[i], None if (i + j) % 3 == 2 else m.pick("venues", i),
            EVENT_TITLES[(i + j) % len(EVENT_TITLES)], _iso(start, tz),
            None if j % 5 == 4 else _iso(start + 7200, tz), labels,
            None if j % 3 == 2 else rng.randint(10, 200),
            "0.00" if j % 2 else m.money(500, 5000), j % 2 == 0,
        )


def event_registrations(m: Model) -> Owned:
    rng, fanout = m.rng, m.spec.fanout
    for i, event, id_, _ in m.children("event_registrations", "events",
                                       _at_least_one(m, 2 * fanout)):
        member = m.pick("members", i, none_one_in=6)
        guest = None if member is not None else ("Walk-in guest", "Gast, anonym")[id_ % 2]
        yield i, (id_, event, member, guest, m.stamp(), (True, False, None)[rng.randrange(3)])
    if m.anomalies:  # registered to no event, by no member: belongs to nobody. Anomalies
        # draw nothing from the RNG, so a clean platform is this one minus the anomalies.
        m.orphan_registration = id_ = m.new_id("event_registrations")
        yield ORPHAN, (id_, None, None, "Walk-in guest, no event", ORPHAN_AT, None)


def registration_payments(m: Model) -> Owned:
    rng = m.rng
    for i, registrations in enumerate(m.ranges["event_registrations"]):
        paid = 0
        for registration in registrations:
            if registration != registrations.start and rng.random() >= 0.6:
                continue
            id_, amount = m.new_id("registration_payments"), rng.randrange(500, 15_000)
            if paid % 10 == 0:
                m.refunds.append((id_, i, amount))
            paid += 1
            yield i, (id_, registration, cents(amount), m.stamp(),
                      METHODS[id_ % len(METHODS)], None if id_ % 3 == 0 else f"RF{id_:08d}")
    if m.orphan_registration is not None:  # paid for the orphan registration: orphan too
        yield ORPHAN, (m.new_id("registration_payments"), m.orphan_registration, "12.00",
                       ORPHAN_AT, "cash", None)


def payment_refunds(m: Model) -> Owned:
    for payment, i, amount in m.refunds:
        yield i, (m.new_id("payment_refunds"), payment, cents(amount // (1 + payment % 2)),
                  m.stamp(), (None, "Event cancelled", "Doppelt bezahlt, sorry")[payment % 3])


def _at_least_one(m: Model, high: int) -> Callable[[bool], int]:
    """Children per parent, 0..high, but never none for a tenant's first parent (so a tiny
    platform has every chain)."""
    return lambda first: max(int(first), m.rng.randint(0, high))


def _iso(epoch: int, tz: tzinfo) -> str:
    return datetime.fromtimestamp(epoch, tz).isoformat()


GENERATORS: dict[str, Callable[[Model], Owned]] = {
    "countries": countries, "plans": plans, "currencies": currencies, "tenants": tenants,
    "tenant_settings": tenant_settings, "members": members, "venues": venues, "events": events,
    "event_registrations": event_registrations, "registration_payments": registration_payments,
    "payment_refunds": payment_refunds,
}

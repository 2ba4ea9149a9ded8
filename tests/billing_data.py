"""A price list with a change on 2026-07-01, shared by the billing tests."""

from __future__ import annotations

from billing.pricelist import PriceList

NEW_PRICES = PriceList.from_toml(
    """
[[prices]]
effective = 2020-01-01
live_eur_per_hour = "150.00"
work_eur_per_hour = "150.00"
[[prices]]
effective = 2026-07-01
live_eur_per_hour = "180.00"
work_eur_per_hour = "160.00"
""",
    source="test",
)

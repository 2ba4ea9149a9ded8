"""Errors of the billing rules and the SLA calendar.

Kept free of ``tenant_export`` so the rules stay importable alone; the CLI maps
:class:`RuleViolation` (and its subclass) to exit status 2, like ``BadInput``.
"""

from __future__ import annotations


class RuleViolation(ValueError):
    """A request the terms refuse (too late a booking, zero minutes, a naive time): exit 2."""


class PriceListError(RuleViolation):
    """The price list an operator wrote cannot be used; the message names the file and entry."""

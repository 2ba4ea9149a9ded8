"""The demo's tenants: the reference platform's clubs (``tenant_export.refplatform``).

The demo runs on the reference platform that ``serve`` uses too (awkward values, documents
with hostile names, a lost blob), so what it shows is what the tests check. ``TENANTS`` lets
the command line refuse an unknown demo tenant before anything starts.
"""

from __future__ import annotations

from tenant_export.refplatform.data import NAMED_TENANTS

TENANTS: list[tuple[str, str]] = list(NAMED_TENANTS)
"""(tenant id, name) of each demo tenant, the one exported by default first."""

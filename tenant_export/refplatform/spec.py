"""What to generate (``PlatformSpec``) and what was generated (``Platform``, with its ground truth).

The ground truth is computed from the generator's own model while it produces rows, never by
querying the database: it is the independent oracle an export is judged against.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .blobs import blob_content, document_keys
from .data import NAMED_TENANTS
from .schema import Backend, render

Key = tuple[object, ...]


def tenant_ids(count: int) -> list[str]:
    return [t for t, _ in NAMED_TENANTS[:count]] + [f"t-{i + 1:04d}" for i in range(3, count)]


def tenant_schema(tenant_id: str) -> str:
    """The schema of a tenant in the schema-per-tenant layout ('-' is not valid unquoted)."""
    return "tenant_" + tenant_id.replace("-", "_")


@dataclass(frozen=True)
class PlatformSpec:
    """Sizes per tenant; child tables get about ``fanout`` rows per parent row."""

    tenants: int = 3
    members_per_tenant: int = 5
    events_per_tenant: int = 3
    posts_per_tenant: int = 4
    documents_per_tenant: int = 4
    invoices_per_tenant: int = 2
    activity_per_tenant: int = 6
    fanout: int = 2
    blob_bytes: int = 2048
    anomalies: bool = True
    track_truth: bool = True
    seed: int = 7

    def __post_init__(self) -> None:
        counts = (self.members_per_tenant, self.events_per_tenant, self.posts_per_tenant,
                  self.documents_per_tenant, self.invoices_per_tenant, self.activity_per_tenant)
        if self.tenants < 1 or self.fanout < 1 or min(counts) < 0 or self.blob_bytes < 0:
            raise ValueError(f"invalid platform sizes: {self}")

    @classmethod
    def tiny(cls, *, anomalies: bool = True, seed: int = 7) -> PlatformSpec:
        """3 tenants with a handful of rows each: every feature and anomaly, in milliseconds."""
        return cls(anomalies=anomalies, seed=seed)

    @classmethod
    def bench(cls, rows: int, *, seed: int = 7) -> PlatformSpec:
        """About ``rows`` rows in total, without ground-truth lists (their memory grows with it)."""
        tenants = max(3, rows // 50_000)
        k = max(1, round(1000 * rows / tenants / _scaled(1000, 1, seed).estimated_rows()))
        return _scaled(k, tenants, seed)

    @property
    def venues_per_tenant(self) -> int:
        return max(1, self.events_per_tenant // 3)

    @property
    def groups_per_tenant(self) -> int:
        return max(2, self.members_per_tenant // 10)

    @property
    def tags_per_tenant(self) -> int:
        return max(3, self.posts_per_tenant // 4)

    def estimated_rows(self) -> int:
        """Expected total rows, from the same probabilities the generator uses."""
        m, e, p = self.members_per_tenant, self.events_per_tenant, self.posts_per_tenant
        d, i, f = self.documents_per_tenant, self.invoices_per_tenant, self.fanout
        per = (4 + 2 * m + self.venues_per_tenant + e * (1 + f * 1.66) + p * (2.5 + f + f * f / 2)
               + self.groups_per_tenant + self.tags_per_tenant + 1.5 * d + i * (1 + f)
               + self.activity_per_tenant)
        return round(14 + self.tenants * per)


def _scaled(k: int, tenants: int, seed: int) -> PlatformSpec:
    """The benchmark's proportions: k members (and activity rows) per tenant."""
    return PlatformSpec(tenants=tenants, members_per_tenant=k, events_per_tenant=k // 4,
                        posts_per_tenant=k // 2, documents_per_tenant=max(4, k // 50),
                        invoices_per_tenant=k // 4, activity_per_tenant=k, blob_bytes=512,
                        track_truth=False, seed=seed)


@dataclass
class Platform:
    """A generated platform: where it is, its catalog, and the ground truth of ownership.

    ``owned[tenant][table]`` holds the sorted primary-key tuples (values as generated:
    timestamps are ISO 8601 strings) of every content table, empty lists included; it is empty
    when the spec does not track truth, but ``row_counts``, ``cross_tenant`` and ``orphans``
    are always kept. Table names are bare: ``table_schemas`` says where each lives.
    """

    backend: Backend
    location: str
    spec: PlatformSpec
    tenant_ids: list[str]
    catalog_toml: str
    owned: dict[str, dict[str, list[Key]]]
    cross_tenant: dict[str, int]
    orphans: dict[str, int]
    row_counts: dict[str, int]
    shared_tables: list[str]
    content_tables: list[str]
    partitioned: dict[str, list[str]]
    views: list[str]
    materialized_views: list[str]
    schemas: list[str]
    table_schemas: dict[str, str]
    primary_keys: dict[str, tuple[str, ...]]
    missing_blobs: list[str]
    schema_per_tenant: bool = False
    blobs: dict[str, bytes] = field(default_factory=dict)

    def blob_keys(self) -> Iterator[str]:
        """Keys of the blobs that exist (a missing blob's document row exists all the same)."""
        missing = set(self.missing_blobs)
        for index, tenant in enumerate(self.tenant_ids):
            for key in document_keys(index, tenant, self.spec.documents_per_tenant):
                if key not in missing:
                    yield key

    def blob_for(self, key: str) -> bytes:
        return blob_content(self.spec.seed, self.spec.blob_bytes, key)

    def ddl(self) -> str:
        schemas = [tenant_schema(t) for t in self.tenant_ids] if self.schema_per_tenant else []
        return render(self.backend, schemas).script()

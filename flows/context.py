"""Everything one run needs, resolved once from the settings at the edge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine

from sources.catalog import Catalog, CatalogConfig, discover
from sources.database import open_engine
from storage.s3 import make_client
from tenant_export.settings import Settings


class StoreContext(Protocol):
    """What steps that only touch S3 need (backup verify/restore/prune work without the
    platform database)."""

    settings: Settings
    s3: Any


@dataclass
class RunContext:
    """Connections and the resolved catalog, shared by the steps of a run."""

    settings: Settings
    engine: Engine
    catalog: Catalog
    s3: Any

    @classmethod
    def open(cls, settings: Settings) -> RunContext:
        """Reach the database and read its catalog; S3 is checked by the steps that need it."""
        config = CatalogConfig.load(settings.catalog)
        engine = open_engine(settings.resolved_source_url())
        catalog = discover(engine, config)
        return cls(settings=settings, engine=engine, catalog=catalog, s3=make_client())

    @staticmethod
    def s3_only() -> Any:
        """An S3 client for steps that do not touch the platform database."""
        return make_client()

    def close(self) -> None:
        """Release pooled database connections."""
        self.engine.dispose()

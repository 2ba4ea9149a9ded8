"""Everything one run needs, opened from the settings the edge resolved.

The edge (CLI, demo) resolves :class:`Settings` once and installs it with :func:`using`; a flow
started by a Prefect worker is its own edge and resolves them from its environment. Flows ask
:func:`current_settings` once and pass the result down; nothing else reads the environment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from kernel.settings import Settings
from sources.catalog import Catalog, CatalogConfig, discover
from sources.tenants import TenantRef, tenant_key
from storage.s3 import make_client

if TYPE_CHECKING:  # Arrow: loaded by the runs that read a database or a snapshot (issue 13)
    from sources.database import Snapshot
    from storage.snapshots import SnapshotStore

_current: ContextVar[Settings | None] = ContextVar("tenant_export_settings", default=None)


@contextmanager
def using(settings: Settings) -> Iterator[Settings]:
    """Make ``settings`` the ones flows started in this context run with."""
    token = _current.set(settings)
    try:
        yield settings
    finally:
        _current.reset(token)


def current_settings() -> Settings:
    """The settings installed by the edge, or (in a worker's flow run) the environment's."""
    installed = _current.get()
    return installed if installed is not None else Settings()


@dataclass
class S3Context:
    """What steps that only touch S3 need (verify, restore, prune work without the platform
    database)."""

    settings: Settings
    s3: Any = field(repr=False)

    @classmethod
    def open(cls, settings: Settings) -> S3Context:
        """An S3 client built from the settings."""
        return cls(settings=settings, s3=make_client(settings))

    @property
    def store(self) -> SnapshotStore:
        """The backup bucket in the snapshot format."""
        from storage.snapshots import SnapshotStore  # noqa: PLC0415 - Arrow, when asked for

        return SnapshotStore(self.s3, self.settings.backup_bucket)


@dataclass
class RunContext(S3Context):
    """Connections and the resolved catalog, shared by the steps of a run."""

    engine: Engine = field(repr=False)
    catalog: Catalog = field(repr=False)

    @classmethod
    def open(cls, settings: Settings) -> RunContext:
        """Reach the database and read its catalog; S3 is checked by the steps that need it."""
        from sources.database import open_engine  # noqa: PLC0415 - Arrow, when asked for

        config = CatalogConfig.load(settings.catalog)
        engine = open_engine(settings.resolved_source_url())
        try:
            catalog = discover(engine, config)
            catalog.require_runnable()  # every table classified, documents confined
        except BaseException:
            engine.dispose()
            raise
        return cls(settings=settings, s3=make_client(settings), engine=engine, catalog=catalog)

    def check_tenant(self, tenant_id: str) -> TenantRef:
        """The tenant as stored (``.id`` is the id every prefix, lock and artifact must use:
        ``ACME`` under a case-insensitive collation is ``acme``), or ``UnknownTenant`` (exit 2)
        before anything is written."""
        from sources.database import Snapshot  # noqa: PLC0415 - Arrow, when asked for

        with Snapshot(self.engine) as snap:
            return tenant_key(self.catalog, snap, tenant_id)

    @contextmanager
    def snapshot(self, *, side: bool = False) -> Iterator[Snapshot]:
        """A read snapshot with the batch bounds of the settings; on the way out, the run's log
        says which tables were read as tuples instead of by ADBC, and why. ``side``: with a
        second connection for the counts of rows no tenant gets (``Snapshot.unowned_ahead``).
        """
        from sources.database import Snapshot  # noqa: PLC0415 - Arrow, when asked for

        with Snapshot(self.engine, batch_rows=self.settings.batch_rows,
                      batch_bytes=self.settings.batch_bytes,
                      arrow=self.settings.arrow_reads, side=side) as snap:
            try:
                yield snap
            finally:  # a failed run's log says it too
                for table, reason in sorted(snap.arrow_fallbacks.items()):
                    _run_log().info("table %s read as Python tuples (slower, same values): %s",
                                    "(every table)" if table == "*" else repr(table), reason)

    def close(self) -> None:
        """Release pooled database connections."""
        self.engine.dispose()


def _run_log() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow run's logger inside a run, else this module's."""
    from prefect import get_run_logger  # noqa: PLC0415 - flows only
    from prefect.exceptions import MissingContextError  # noqa: PLC0415

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)

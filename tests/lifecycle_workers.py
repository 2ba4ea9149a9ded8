"""Process targets for the concurrency tests of the audit trail and the signing key.

Kept apart from the test modules so a spawned process imports only what it uses (a test module
pulls in the whole CLI, which costs seconds per process on a busy machine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storage.audit import AuditKind, AuditTrail
from storage.signing import key_id, load_signing_key


def append_audit_events(url: str, worker: int, count: int, start: Any) -> None:
    """Wait for every worker, then append ``count`` events for tenant ``p-<worker>``."""
    trail = AuditTrail(url)
    start.wait(timeout=120)
    for i in range(count):
        trail.record(AuditKind.MIGRATION_ENTRY, f"p-{worker}", "operator", entry=i)
    trail.close()


def signing_key_id(state_dir: str, start: Any, out: Any) -> None:
    """Wait for every worker, then load (or create) the state directory's key; report its id."""
    start.wait(timeout=60)
    out.put(key_id(load_signing_key(None, Path(state_dir)).public_key()))

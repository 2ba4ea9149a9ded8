"""The retry policy of every step: transient errors (throttling, 5xx, a dropped connection) are
retried by Prefect with growing delays; anything else fails at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Task
from prefect.cache_policies import NO_CACHE

from kernel.errors import is_transient

RETRY_DELAYS = [2.0, 10.0, 30.0]
P = ParamSpec("P")
R = TypeVar("R")


def retry_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn``: retry only what :func:`is_transient` says may pass."""
    return is_transient(state.result(raise_on_failure=False))


def step(**options: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A Prefect task that is never cached (its inputs hold connections) and retries transient
    failures; ``options`` go to ``@task`` (a run name, say)."""

    def decorate(fn: Callable[P, R]) -> Task[P, R]:
        return Task(fn, cache_policy=NO_CACHE, retries=len(RETRY_DELAYS),
                    retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient,
                    **options)

    return decorate

"""Console logging for the CLI: Prefect's engine tracebacks stay off the terminal unless --debug.

The flow and task run loggers still send every record, tracebacks included, to the Prefect API
(the UI shows them); only the console copy is filtered, since the CLI prints the error itself.
"""

from __future__ import annotations

import logging

_ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine",
                   "prefect.task_engine")


class _NoEngineTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith(_ENGINE_LOGGERS) and record.levelno >= logging.ERROR)


def quiet_console(debug: bool) -> None:
    """Drop engine error records from console handlers (not from the API handler)."""
    if debug:
        return
    from prefect.logging.configuration import setup_logging  # noqa: PLC0415

    setup_logging()  # Prefect installs its handlers lazily; filter them once they exist
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not any(
            isinstance(f, _NoEngineTracebacks) for f in handler.filters
        ):
            handler.addFilter(_NoEngineTracebacks())

"""Flows: the only place where sources, exporters and storage meet; Prefect orchestration."""

import os

from kernel.lean import lean_process

if os.environ.get("PREFECT__FLOW_RUN_ID"):  # a flow run a Prefect worker started: as lean as
    lean_process()  # the console script (kernel/lean.py)

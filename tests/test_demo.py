"""``make demo`` as a newcomer runs it: the CLI's ``demo`` in a fresh process, on embedded
defaults (moto, the reference platform, a generated key), nothing configured beforehand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_exports_downloads_and_checks_what_a_client_gets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TENANT_EXPORT_", "AWS_", "PREFECT_API"))}
    env |= {"TENANT_EXPORT_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT),
            "PREFECT_HOME": str(tmp_path / "prefect"), "TENANT_EXPORT_LOCAL_SERVER_IDLE": "0",
            "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "tenant_export.cli", "demo"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "Every file was downloaded through its link and matched its SHA-256." in out
    for name in ("datapackage.json", "README.html", "documents/index.csv", ".xlsx"):
        assert name in out, name
    assert "X-Amz-Signature" in out  # the links are shown, for the client to open
    assert (tmp_path / "state" / "demo" / "control.sqlite").exists()  # kept apart from serve

"""``make demo``: what a departing client gets, end to end, on embedded defaults.

Starts moto's S3 emulator on 127.0.0.1 and builds the reference platform
(``tenant_export.embedded``: an association-management SaaS with three clubs, awkward values
included), exports one club, downloads every file through its signed link like the client
would (sizes and SHA-256 checked against the manifest), and prints every file with its link
and the first lines of the guide inside the package. ``--keep-running`` keeps the emulator up
so the links can be opened in a browser until Ctrl-C.

The demo keeps its own state (platform, control database with the audit trail) in the state
directory's ``demo`` folder, apart from a ``serve`` running on the same machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import urllib.request
from typing import Any

from pydantic import SecretStr

from kernel.errors import VerificationFailed
from kernel.settings import Settings
from tenant_export.demo_data import TENANTS

GUIDE_LINES = 14


def run_demo(settings: Settings, tenant: str, *, keep_running: bool = False) -> None:
    """Build the embedded platform, export ``tenant``, check and show what the client gets."""
    from flows.context import using  # noqa: PLC0415 - imports Prefect
    from flows.export_flow import ExportRequest, offboarding_export  # noqa: PLC0415
    from tenant_export.embedded import embedded_platform  # noqa: PLC0415

    started = time.monotonic()
    folder = settings.state_dir / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    own = settings.model_copy(update={  # apart from a `serve` on the same machine
        "state_dir": folder, "control_url": SecretStr(f"sqlite:///{folder / 'control.sqlite'}")})
    with embedded_platform(own) as embedded:
        endpoint = embedded.env["AWS_ENDPOINT_URL_S3"]
        print(f"S3: a LOCAL S3 EMULATOR (moto, in memory) at {endpoint}. It does not enforce "
              "link\n    signatures or expiry; real S3, MinIO or Garage do. Platform: the "
              f"reference platform\n    ({len(embedded.platform.tenant_ids)} clubs) in "
              f"{embedded.settings.resolved_source_url()}.")
        print(f"Exporting '{tenant}' as its treasurer would receive it...", flush=True)
        with using(embedded.settings):
            result = offboarding_export(ExportRequest(tenant_id=tenant, link_ttl="1h"))
        guide = _check_like_a_client(result)
        _summary(result, guide, time.monotonic() - started)
        if keep_running:
            _wait(endpoint, result["expires_at"])


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - our signed http link
        return bytes(response.read())


def _check_like_a_client(result: dict[str, Any]) -> bytes:
    """Download every file through its link; sizes and hashes must match the manifest.
    Returns README.txt."""
    fetched: dict[str, bytes] = {}
    for f in result["files"]:
        data = _download(f["url"])
        if len(data) != f["bytes"] or hashlib.sha256(data).hexdigest() != f["sha256"]:
            raise VerificationFailed(f"downloaded {f['path']} does not match its checksum")
        fetched[f["path"]] = data
    manifest = json.loads(fetched["datapackage.json"])
    for resource in manifest["resources"]:
        if hashlib.sha256(fetched[resource["path"]]).hexdigest() != resource["hash"].removeprefix(
                "sha256:"):
            raise VerificationFailed(f"{resource['path']}: manifest hash differs from download")
    return fetched.get("README.txt", b"")


def _summary(result: dict[str, Any], guide: bytes, seconds: float) -> None:
    files = result["files"]
    print(f"\nExport {result['export_id']} of '{result['tenant_id']}': {len(files)} files. "
          f"Links work until {result['expires_at']}; the package is kept until "
          f"{result.get('package_expires_at')}.")
    print("Every file was downloaded through its link and matched its SHA-256.\n")
    print("What the client receives (the first file holds all the others, folders kept):")
    for f in files:
        rows = "" if f.get("rows") is None else f"{f['rows']} rows"
        print(f"  {f['path']:<48} {f['bytes']:>9} bytes {rows:>10}\n      {f['url']}")
    notice = result.get("notice") or {}
    if notice:
        print(f"\nExport-ready email to the club's contacts: {notice['reason']}.")
    lines = guide.decode("utf-8", "replace").splitlines()
    print(f"\nREADME.txt, the guide inside the package (first {GUIDE_LINES} of {len(lines)} "
          "lines):")
    for line in lines[:GUIDE_LINES]:
        print(f"  | {line}")
    print(f"\nDone in {seconds:.1f} s. docs/client-guide.md says the same to the client.")


def _wait(endpoint: str, expires_at: str) -> None:
    """Keep the emulator (and so the links) up until Ctrl-C."""
    print(f"\nThe emulator stays up at {endpoint}: open the links above in a browser (they "
          f"work until {expires_at}). Press Ctrl-C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopping the emulator.")


def main(argv: list[str] | None = None) -> None:
    """``python -m tenant_export.demo [--tenant T] [--keep-running]``."""
    parser = argparse.ArgumentParser(prog="python -m tenant_export.demo",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tenant", default=TENANTS[0][0], choices=[t for t, _ in TENANTS])
    parser.add_argument("--keep-running", action="store_true",
                        help="keep the S3 emulator up so the links can be opened (Ctrl-C)")
    args = parser.parse_args(argv)
    from tenant_export.cliapp import run  # noqa: PLC0415

    run(lambda settings: run_demo(settings, args.tenant, keep_running=args.keep_running))


if __name__ == "__main__":
    main()

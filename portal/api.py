"""The HTTP API under ``/v1``: what a contact's own tools (or the platform's web app) call.

Every route needs a bearer token and sees only the token's tenant. Handlers are plain
functions (FastAPI runs them in its thread pool): the stores they call are synchronous.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request, Response
from fastapi.responses import RedirectResponse

from portal.auth import api_contact, portal_of
from portal.models import BackupStatus, Export, ExportList, ExportOptions, Problem
from storage.tokens import Contact

Caller = Annotated[Contact, Depends(api_contact)]
ExportRef = Annotated[str, Path(description="An export's id, as the listing gives it.",
                                max_length=80)]


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    meaning = {
        400: "The body is not JSON.",
        401: "No token, or a wrong, expired or revoked one.",
        404: "No such export (or file) for this account; another account's ids are not "
             "found either.",
        409: "An export of this account is already requested or running.",
        410: "The file no longer matches the package as published.",
        429: "The daily limit of exports is reached (see Retry-After).",
        503: "The export could not be started, or storage is unreachable; try again later.",
    }
    return {code: {"model": Problem, "description": meaning[code]} for code in codes}


router = APIRouter(prefix="/v1", tags=["exports"])


@router.get("/exports", response_model=ExportList, responses=_problems(401, 503),
            summary="List the account's exports")
def list_exports(request: Request, caller: Caller) -> ExportList:
    """Requests made here and packages made for the account, newest first, with state,
    progress, and each retained file's size and SHA-256."""
    return portal_of(request).exports(caller)


@router.post("/exports", status_code=202, response_model=Export,
             responses=_problems(400, 401, 409, 429, 503), summary="Start an export")
def start_export(request: Request, response: Response, caller: Caller,
                 options: Annotated[ExportOptions | None, Body()] = None) -> Export:
    """Start the offboarding export of the account (CSV tables, documents as ZIP). At most one
    runs at a time; at most a configured number start in any 24 hours."""
    export = portal_of(request).start(caller, options or ExportOptions(), channel="api")
    response.headers["Location"] = f"/v1/exports/{export.id}"
    return export


@router.get("/exports/{export_id}", response_model=Export, responses=_problems(401, 404, 503),
            summary="One export")
def get_export(request: Request, caller: Caller, export_id: ExportRef) -> Export:
    """State (requested, running, completed, failed, deleted), progress while running, the
    failure line, and the files once completed."""
    return portal_of(request).export(caller, export_id)


@router.get(
    "/exports/{export_id}/files/{path:path}", status_code=303, response_class=RedirectResponse,
    responses={303: {"description": "Redirect to a link signed for this one download, valid "
                     "for a few minutes.",
                     "headers": {"Location": {"description": "The signed link (a secret: do "
                                              "not log or share it).",
                                              "schema": {"type": "string"}}}},
               **_problems(401, 404, 410, 503)},
    summary="Download one file")
def download_file(request: Request, caller: Caller, export_id: ExportRef,
                  path: Annotated[str, Path(description="The file's path in the package, "
                                            "e.g. data/members.csv.", max_length=1024)],
                  ) -> RedirectResponse:
    """Redirect to a short-lived signed link for one file of a retained package. Each call
    is recorded in the account's audit trail (who, which file, when)."""
    link = portal_of(request).download(caller, export_id, path, channel="api")
    return RedirectResponse(link, status_code=303, headers={"Cache-Control": "no-store"})


@router.get("/backups/latest", response_model=BackupStatus, responses=_problems(401, 503),
            tags=["monitoring"], summary="Last backup and last restore test")
def latest_backup(request: Request, caller: Caller) -> BackupStatus:
    """When the account's data was last backed up and how the last restore test went (the
    monitoring extract of the terms, Annex 1)."""
    return portal_of(request).backups(caller)

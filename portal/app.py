"""The portal as an ASGI application: ``create_app(settings)`` for uvicorn or any server
(``uvicorn --factory portal.app:create_app`` resolves the settings from the environment).

Every answer is private to one account, so none may be cached (``Cache-Control: no-store``)
and none sends a Referer onwards; pages forbid framing and any script. Refusals are JSON
``Problem`` documents on the API and short HTML pages on the web page. Unexpected storage or
database failures answer 503 with a generic line (the log has the reason, never a link).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import Match

from kernel.errors import ExportError
from kernel.settings import Settings
from portal import api, pages
from portal.auth import authenticate
from portal.config import PortalSettings
from portal.models import Problem
from portal.service import Portal, Refusal, StarterFactory

log = logging.getLogger("portal")
API_VERSION = "1.0.0"
PAGE_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
               "frame-ancestors 'none'; base-uri 'none'")
DESCRIPTION = """Self-service exports for a client's authorised contacts: start the offboarding
export of the account, follow it, and download each file through a link signed for one click.

Authenticate every call with `Authorization: Bearer <token>` (a contact token issued by the
operator). Every call sees only the token's account: ids of other accounts are answered 404.
"""


def build_app() -> FastAPI:
    """The routes, middleware and error handlers, without any service attached (enough for
    the OpenAPI document)."""
    app = FastAPI(title="Tenant export portal", version=API_VERSION, description=DESCRIPTION,
                  docs_url=None, redoc_url=None,
                  generate_unique_id_function=lambda route: route.name)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.add_exception_handler(Refusal, _refusal)
    app.add_exception_handler(ExportError, _unavailable)
    app.add_exception_handler(HTTPException, _http_error)
    app.middleware("http")(_api_authentication)
    app.middleware("http")(_headers)
    return app


def create_app(settings: Settings | None = None, portal: PortalSettings | None = None, *,
               starter: StarterFactory | None = None,
               clock: Callable[[], datetime] | None = None) -> FastAPI:
    """The portal app with its services open (settings from the environment when omitted).

    Args:
        settings: the installation's settings (buckets, control database, S3).
        portal: the portal's own settings (limits, link TTL, cookies, starter).
        starter: builds the export starter (default: as ``portal.starter`` says).
        clock: the time source (tests).
    """
    app = build_app()
    app.state.portal = Portal.open(settings or Settings(), portal or PortalSettings(),
                                   starter=starter, clock=clock)
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document the app serves at /openapi.json (docs/portal-openapi.json)."""
    return build_app().openapi()


async def _refusal(_request: Request, exc: Exception) -> Response:
    refusal = exc if isinstance(exc, Refusal) else Refusal(500, "error", "internal error")
    return JSONResponse(refusal.problem().model_dump(exclude_none=True),
                        status_code=refusal.status, headers=refusal.headers)


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    problem = Problem(error="unavailable", detail="storage or the control database did not "
                      "answer; try again later")
    return JSONResponse(problem.model_dump(exclude_none=True), status_code=503,
                        headers={"Retry-After": "30"})


HTTP_ERRORS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    """The framework's own refusals (unknown path, unreadable body, wrong method) as
    ``Problem`` documents too; a 405 lists every method of the path in ``Allow`` (Starlette
    names only the first route's, and /v1/exports has two)."""
    if not isinstance(exc, HTTPException):
        raise exc
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed: set[str] = set()
        for route in request.app.router.routes:
            if route.matches(request.scope)[0] is not Match.NONE:
                allowed |= set(getattr(route, "methods", None) or ())
        headers["Allow"] = ", ".join(sorted(allowed))
    problem = Problem(error=HTTP_ERRORS.get(exc.status_code, f"http_{exc.status_code}"),
                      detail=str(exc.detail))
    return JSONResponse(problem.model_dump(exclude_none=True), status_code=exc.status_code,
                        headers=headers)


async def _api_authentication(request: Request,
                              call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """The API checks the token before anything else, the body included: a caller without a
    valid token learns nothing but 401."""
    if request.url.path.startswith("/v1/"):
        try:
            await run_in_threadpool(authenticate, request)
        except Refusal as refusal:
            return await _refusal(request, refusal)
    return await call_next(request)


async def _headers(request: Request,
                   call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.headers.get("content-type", "").startswith("text/html"):
        response.headers["Content-Security-Policy"] = PAGE_POLICY
        response.headers["X-Frame-Options"] = "DENY"
    return response

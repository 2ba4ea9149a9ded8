"""The web page: plain server-rendered HTML, usable without JavaScript.

A contact signs in with its token once; the browser then holds a session cookie. Every form
post carries a CSRF token (see ``portal.auth``). Downloads are links to this server, which
answers with a redirect to a link signed for that one click, exactly as the API does.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from portal.auth import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_TTL_SECONDS,
    clear_cookie,
    csrf_for,
    csrf_ok,
    new_sign_in_nonce,
    portal_of,
    session_contact,
    set_cookie,
    sign_in_ok,
)
from portal.models import ExportOptions
from portal.service import Refusal
from storage.tokens import Contact

TEMPLATES = Path(__file__).parent / "templates"
_UNITS = ("bytes", "kB", "MB", "GB", "TB")


def size(count: int) -> str:
    """``3.2 MB`` (decimal units), exact bytes below 1 kB."""
    value, unit = float(count), 0
    while value >= 1000 and unit < len(_UNITS) - 1:
        value, unit = value / 1000, unit + 1
    return f"{count} bytes" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def when(moment: datetime | None) -> str:
    """A time in UTC, to the minute."""
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_env.globals.update(size=size, when=when)
router = APIRouter(include_in_schema=False)


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A template as an HTML response."""
    base = {"contact": None, "csrf": "", "error": None, "message": None, "title": ""}
    return HTMLResponse(_env.get_template(name).render(**{**base, **context}),
                        status_code=status)


def _sign_in_page(request: Request, status: int = 200, error: str | None = None
                  ) -> HTMLResponse:
    nonce = new_sign_in_nonce()
    response = render("sign_in.html.j2", status, title="Sign in", nonce=nonce, error=error)
    set_cookie(request, response, SIGN_IN_COOKIE, nonce, SIGN_IN_TTL_SECONDS)
    return response


def _home(request: Request, who: Contact, session: str, status: int = 200,
          error: str | None = None, message: str | None = None) -> HTMLResponse:
    portal = portal_of(request)
    return render("exports.html.j2", status, title=f"Exports of {who.tenant_id}", contact=who,
                  csrf=csrf_for(session), listing=portal.exports(who),
                  backups=portal.backups(who), error=error, message=message)


def _to_start() -> RedirectResponse:
    return RedirectResponse("/", status_code=303)


def _refused(title: str) -> HTMLResponse:
    return render("message.html.j2", 403, title=title,
                  error="the form had expired or came from another site; nothing was done")


@router.get("/")
def home(request: Request) -> Response:
    """The exports of the signed-in contact's account, or the sign-in form."""
    signed_in = session_contact(request)
    if signed_in is None:
        return _sign_in_page(request)
    return _home(request, *signed_in)


@router.post("/sign-in")
def sign_in(request: Request, token: Annotated[str, Form(max_length=200)] = "",
            nonce: Annotated[str, Form(max_length=100)] = "") -> Response:
    """Check the token once; the browser then carries a session cookie."""
    if not sign_in_ok(request, nonce):
        return _sign_in_page(request, 403, "the sign-in form had expired; please try again")
    portal = portal_of(request)
    who = portal.tokens.authenticate(token.strip())
    if who is None:
        return _sign_in_page(request, 401, "this token is not valid (mistyped, expired or "
                             "revoked); ask your provider for a new one")
    session = portal.tokens.open_session(who, portal.config.session_ttl_seconds)
    response = _to_start()
    set_cookie(request, response, SESSION_COOKIE, session, portal.config.session_ttl_seconds)
    clear_cookie(request, response, SIGN_IN_COOKIE)
    return response


@router.post("/sign-out")
def sign_out(request: Request, csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """End the session (its cookie and its row)."""
    signed_in = session_contact(request)
    if signed_in is not None:
        if not csrf_ok(signed_in[1], csrf):
            return _refused("Not signed out")
        portal_of(request).tokens.close_session(signed_in[1])
    response = _to_start()
    clear_cookie(request, response, SESSION_COOKIE)
    return response


@router.post("/exports")
def start(request: Request, csrf: Annotated[str, Form(max_length=100)] = "",
          excel: Annotated[bool, Form()] = False) -> Response:
    """Start an export; the answer is the new export's page."""
    signed_in = session_contact(request)
    if signed_in is None:
        return _to_start()
    who, session = signed_in
    if not csrf_ok(session, csrf):
        return _refused("Export not started")
    try:
        export = portal_of(request).start(who, ExportOptions(excel=excel), channel="web")
    except Refusal as refusal:
        return _home(request, who, session, refusal.status, error=refusal.detail)
    return RedirectResponse(f"/exports/{export.id}", status_code=303)


@router.get("/exports/{ref}")
def export_page(request: Request, ref: str) -> Response:
    """One export: state, progress, files with sizes and checksums."""
    signed_in = session_contact(request)
    if signed_in is None:
        return _to_start()
    who, session = signed_in
    try:
        export = portal_of(request).export(who, ref)
    except Refusal as refusal:
        return render("message.html.j2", refusal.status, title="Export not found",
                      contact=who, csrf=csrf_for(session), error=refusal.detail)
    return render("export.html.j2", title=f"Export {export.id}", contact=who,
                  csrf=csrf_for(session), e=export)


@router.get("/exports/{ref}/files/{path:path}")
def download(request: Request, ref: str, path: str) -> Response:
    """Redirect to a link signed for this one click (recorded in the audit trail)."""
    signed_in = session_contact(request)
    if signed_in is None:
        return _to_start()
    who, session = signed_in
    try:
        link = portal_of(request).download(who, ref, path, channel="web")
    except Refusal as refusal:
        return render("message.html.j2", refusal.status, title="File not available",
                      contact=who, csrf=csrf_for(session), error=refusal.detail)
    return RedirectResponse(link, status_code=303, headers={"Cache-Control": "no-store"})


@router.get("/portal.css")
def stylesheet() -> Response:
    """The one stylesheet (served here: the Content-Security-Policy allows only 'self')."""
    return Response((TEMPLATES / "portal.css").read_bytes(), media_type="text/css",
                    headers={"Cache-Control": "public, max-age=3600"})

"""Who is calling: a bearer token for the API, a session cookie for the web page.

The API takes ``Authorization: Bearer <token>`` on every call and never a cookie, so a
browser cannot be made to call it on a contact's behalf (no CSRF surface). The web page signs
in with the token once and then carries a random session id in a cookie: HttpOnly,
SameSite=Strict, Secure behind TLS (named ``__Host-...`` then, so no other host can set it).
Form posts carry a CSRF token: for a signed-in browser an HMAC of its session id (which only
that browser holds), before sign-in a random value that must match a short-lived cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from portal.service import Portal, Refusal
from storage.tokens import Contact

SESSION_COOKIE = "portal_session"
SIGN_IN_COOKIE = "portal_sign_in"
SIGN_IN_TTL_SECONDS = 3600

bearer = HTTPBearer(
    auto_error=False, scheme_name="contactToken",
    description="A contact token (tep_...), issued by the operator with `tenant-export portal "
    "token issue TENANT --contact EMAIL`.")


def portal_of(request: Request) -> Portal:
    """The portal services of the app serving this request."""
    portal: Portal = request.app.state.portal
    return portal


def unauthorized(detail: str) -> Refusal:
    """401 with the challenge RFC 6750 asks for."""
    return Refusal(401, "unauthorized", detail,
                   headers={"WWW-Authenticate": 'Bearer realm="tenant-export portal"'})


def authenticate(request: Request) -> Contact:
    """The contact the request's bearer token stands for; 401 alike for missing, malformed,
    wrong, expired and revoked tokens. Checked once per request (``request.state``)."""
    known = getattr(request.state, "contact", None)
    if isinstance(known, Contact):
        return known
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise unauthorized("send the contact token as Authorization: Bearer <token>")
    contact = portal_of(request).tokens.authenticate(credentials.strip())
    if contact is None:
        raise unauthorized("the token is not valid (wrong, expired or revoked)")
    request.state.contact = contact
    return contact


def api_contact(request: Request, _credentials: Annotated[
        HTTPAuthorizationCredentials | None, Security(bearer)]) -> Contact:
    """The API's dependency (it also declares the bearer scheme in the OpenAPI document)."""
    return authenticate(request)


def secure(request: Request) -> bool:
    """Whether cookies get the Secure flag: as configured, else when the request came over
    HTTPS (uvicorn takes the scheme from a trusted proxy's X-Forwarded-Proto)."""
    configured = portal_of(request).config.secure_cookies
    return request.url.scheme == "https" if configured is None else configured


def cookie_name(request: Request, base: str) -> str:
    """``__Host-<base>`` on Secure cookies (bound to this host, path /), else ``<base>``."""
    return f"__Host-{base}" if secure(request) else base


def read_cookie(request: Request, base: str) -> str | None:
    """A cookie under either of its names."""
    return request.cookies.get(f"__Host-{base}") or request.cookies.get(base)


def set_cookie(request: Request, response: Response, base: str, value: str,
               max_age: int) -> None:
    """HttpOnly, SameSite=Strict, path /, Secure as :func:`secure` says."""
    response.set_cookie(cookie_name(request, base), value, max_age=max_age, path="/",
                        httponly=True, samesite="strict", secure=secure(request))


def clear_cookie(request: Request, response: Response, base: str) -> None:
    """Remove a cookie (under the name it would have been set with)."""
    response.delete_cookie(cookie_name(request, base), path="/", httponly=True,
                           samesite="strict", secure=secure(request))


def session_contact(request: Request) -> tuple[Contact, str] | None:
    """The signed-in contact and its session id, or None."""
    session = read_cookie(request, SESSION_COOKIE)
    if not session:
        return None
    contact = portal_of(request).tokens.session(session)
    return (contact, session) if contact is not None else None


def csrf_for(session: str) -> str:
    """The CSRF token of a session: only the browser holding the session cookie can know it."""
    return hmac.new(session.encode("ascii"), b"tenant-export portal csrf",
                    hashlib.sha256).hexdigest()


def csrf_ok(session: str, presented: str | None) -> bool:
    """Whether a form's CSRF token belongs to this session."""
    return bool(presented) and hmac.compare_digest(csrf_for(session), str(presented))


def new_sign_in_nonce() -> str:
    """A random value for the sign-in form and its cookie (login CSRF)."""
    return secrets.token_urlsafe(24)


def sign_in_ok(request: Request, presented: str | None) -> bool:
    """Whether the sign-in form's value matches the cookie set with the form."""
    expected = read_cookie(request, SIGN_IN_COOKIE)
    return bool(expected and presented) and hmac.compare_digest(str(expected), str(presented))

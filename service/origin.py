"""Which requests the service answers: the `Host` it was asked for, and where writes come from.

Two checks, before anything else reads the request (`OriginMiddleware`):

- **Host** (every request): the `Host` header must name this server. A page that
  rebinds its own domain name to 127.0.0.1 (DNS rebinding) becomes same-origin with the
  service as far as the browser knows, so only the `Host` header (still the attacker's
  name) tells the two apart. Allowed: the bound host; for a loopback bind also
  `localhost`, `127.0.0.1` and `[::1]`; for a wildcard bind (0.0.0.0, ::) the loopback
  names and any IP address (a rebinding page's Host is always a name); and whatever
  `MMEMBED_ALLOWED_HOSTS` adds (`*`: any). Others get 421. A request with no Host at
  all (HTTP/1.0) is not a browser's and passes.
- **Origin** (state-changing methods, only without API keys): a browser sends `Origin`
  and `Sec-Fetch-Site` with cross-site form posts and fetches; one that names another
  origin, or `Sec-Fetch-Site: cross-site`, gets 403 before the body is read. Requests
  with neither header (curl, SDKs) pass. With API keys the check is not needed: a
  cross-site page cannot send the `Authorization` header (not without a CORS preflight,
  which the service does not answer), so keys already guard every write.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import error_response
from service.settings import Settings, is_loopback

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(value: str) -> tuple[str, int | None] | None:
    """(host, port) of a `Host` header value, lower case, IPv6 without brackets; None if
    malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = value.partition(":")
        if ":" in port_text:
            return None
    if not host:
        return None
    if port_text:
        if not port_text.isdigit() or len(port_text) > 5:
            return None
        return host, int(port_text)
    return host, None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostPolicy:
    """The `Host` values a server answers to (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        bind = settings.host.strip("[]").lower()
        configured = [h.strip("[]").lower() for h in settings.allowed_hosts]
        self.any_host = "*" in configured
        self.wildcard_bind = bind in WILDCARD_BINDS
        names = {bind, *configured} - {"*", ""}
        if self.wildcard_bind or is_loopback(bind):
            names.update(LOOPBACK_NAMES)
        self.names = frozenset(names)

    def allows(self, host: str) -> bool:
        """host: lower case, no port, no brackets."""
        if self.any_host or host in self.names:
            return True
        return self.wildcard_bind and _is_ip(host)

    def describe(self) -> str:
        allowed = sorted(f"[{name}]" if ":" in name else name for name in self.names)
        if self.wildcard_bind:
            allowed.append("any IP address")
        return ", ".join(allowed)


def same_origin(origin: str, host_header: str) -> bool:
    """Whether an `Origin` value names the server that the `Host` header names."""
    try:
        parts = urlsplit(origin.strip().lower())
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return False
    default = DEFAULT_PORTS[parts.scheme]
    host = split_host(host_header)
    if host is None:
        return False
    return parts.hostname == host[0] and (origin_port or default) == (host[1] or default)


class OriginMiddleware:
    """421 for a `Host` this server does not answer to; without API keys, 403 for a
    state-changing request a browser sent from another origin."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = HostPolicy(settings)
        self.check_origin = not settings.auth_enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host_header = headers.get("host")
        if host_header is not None:
            host = split_host(host_header)
            if host is None or not self.hosts.allows(host[0]):
                message = (
                    f"this server does not answer to Host {host_header[:100]!r}; it answers to "
                    f"{self.hosts.describe()}. Add the name to MMEMBED_ALLOWED_HOSTS "
                    "(comma-separated) to serve it."
                )
                await error_response(421, "misdirected_request", message)(scope, receive, send)
                return
        if self.check_origin and scope["method"] in STATE_CHANGING:
            refusal = _cross_site(headers, host_header)
            if refusal is not None:
                message = (
                    f"cross-site {scope['method']} refused: {refusal}. Without API keys the "
                    "service accepts writes from its own page and from clients that are not "
                    "browsers; set MMEMBED_API_KEYS to accept them from anywhere with a key."
                )
                await error_response(403, "cross_site_request", message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _headers(scope: Scope) -> dict[str, str]:
    wanted = {b"host", b"origin", b"sec-fetch-site"}
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in wanted
    }


def _cross_site(headers: dict[str, str], host_header: str | None) -> str | None:
    """Why a request is a cross-site browser request, or None."""
    origin = headers.get("origin")
    if origin is not None and (host_header is None or not same_origin(origin, host_header)):
        return f"Origin {origin[:100]!r} is not this server ({host_header or 'no Host'})"
    if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
        return "Sec-Fetch-Site is cross-site"
    return None

"""Optional bearer API keys.

With keys configured, every data endpoint needs `Authorization: Bearer <key>`
(compared in constant time against each key). With none, the service is open,
so it refuses to bind anything but a loopback address unless
`allow_remote_without_key` says otherwise. Health, readiness and metrics stay
open for probes.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.deps import SettingsDep
from service.errors import Unauthorized
from service.settings import Settings, is_loopback

_bearer = HTTPBearer(auto_error=False, description="An API key from MMEMBED_API_KEYS.")


class UnsafeBind(ValueError):
    """Binding a network interface with no API key and no explicit permission."""


def check_bind(settings: Settings) -> None:
    """Raise UnsafeBind when the service would be open to the network without a key."""
    if settings.auth_enabled or settings.allow_remote_without_key or is_loopback(settings.host):
        return
    raise UnsafeBind(
        f"refusing to listen on {settings.host} with no API key: anyone on the network could "
        "use and change the index. Set MMEMBED_API_KEYS=<key>[,<key>...], or "
        "MMEMBED_ALLOW_REMOTE_WITHOUT_KEY=true if a proxy in front does authentication."
    )


def key_matches(candidate: str, settings: Settings) -> bool:
    """Constant-time comparison against every configured key (no early exit)."""
    given = candidate.encode()
    matched = False
    for key in settings.api_keys:
        matched |= hmac.compare_digest(given, key.get_secret_value().encode())
    return matched


async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Dependency for protected routers; a no-op when no keys are configured."""
    if not settings.auth_enabled:
        return
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    if not key_matches(credentials.credentials, settings):
        raise Unauthorized("invalid API key")

"""The service's own page at `/`: static HTML, CSS and JavaScript shipped in the package.

No build step and nothing from another origin: the Content-Security-Policy
allows only this server (plus `blob:` previews fetched with an API key, and
`data:` for the inline icon), so the page works offline and cannot be made to
load scripts from elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

router = APIRouter(tags=["page"])


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def page() -> FileResponse:
    """The search page; it talks to the API from the browser (with a key if one is needed)."""
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


class _RevalidatedStaticFiles(StaticFiles):
    """Static files the browser must revalidate (a cheap 304) before each use.

    Without Cache-Control a browser guesses a freshness time from Last-Modified and
    can run an old app.js against a newer server after an upgrade.
    """

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def static_files() -> StaticFiles:
    """The page's scripts and styles, mounted at /static."""
    return _RevalidatedStaticFiles(directory=STATIC_DIR)

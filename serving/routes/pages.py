"""The pages: the field agent's upload page (``/``), the cleansing manager's map (``/manager``) and its
statistics (``/manager/stats``).

Plain HTML, CSS and JavaScript from ``serving/web/static``, no build step. Leaflet,
Leaflet.markercluster and Swagger UI (the API's documentation page, ``/docs``) come from the npm
registry, pinned by ``serving/web/package-lock.json`` and installed with ``npm ci --prefix
serving/web``; this router serves them from ``serving/web/node_modules`` under
``/vendor/<package>/``: no CDN, no third-party code in the repository, no page that loads anything
from elsewhere. Without them the pages still load and say how to install them.

The pages hold no data. They call the API with the key the user typed once (kept in the browser's
localStorage) and read ``/v1/ui-config`` (no key needed): the tile layer (``VIPARE_TILE_URL``,
``VIPARE_TILE_ATTRIBUTION``; Plan IGN by default; ``none``: markers on a plain background and no tile
request at all),
the classes, the workflow and the upload limit. Pages are sent with a Content-Security-Policy that
lets them load scripts and talk to this origin only (images also from the tile server, when set).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from serving.config import ServiceSettings
from serving.errors import NotFoundError
from serving.grouping import FAMILIES
from serving.incidents import ALLOWED_TRANSITIONS, OPEN_STATUSES, Status
from vipare.taxonomy import DEPOSIT_CLASSES, class_names

__all__ = ["NODE_MODULES", "SHELL", "STATIC_DIR", "VENDOR", "router", "shell_version", "ui_config"]

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
STATIC_DIR = WEB_DIR / "static"
NODE_MODULES = WEB_DIR / "node_modules"
VENDOR: dict[str, str] = {
    "exifr": "exifr/dist",
    "leaflet": "leaflet/dist",
    "leaflet.markercluster": "leaflet.markercluster/dist",
    "swagger-ui": "swagger-ui-dist",
}
"""``/vendor/<name>/...`` -> the folder under :data:`NODE_MODULES` it serves."""
MAP_LIBRARIES = ("leaflet", "leaflet.markercluster")
"""The :data:`VENDOR` entries the maps need."""
SWAGGER_UI = "/vendor/swagger-ui"
VENDOR_FILES: dict[str, frozenset[str]] = {
    # Only what /docs loads: the package's own index.html and initializer point at a demo API elsewhere.
    "swagger-ui": frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}),
    "exifr": frozenset({"lite.esm.js"}),  # JPEG and HEIC: GPS, time, orientation
}
"""Packages of :data:`VENDOR` of which only these files are served."""

_INSTALL = "npm ci --prefix serving/web"
_REVALIDATE = {"Cache-Control": "no-cache"}  # revalidate (ETag): a new release is seen at once
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)

router = APIRouter()


def _tile_source(tile_url: str | None) -> str:
    """The CSP source of the tile server: its origin, ``{s}`` subdomains as a wildcard."""
    if not tile_url:
        return ""
    parts = urlsplit(tile_url)
    host = parts.netloc.replace("{s}", "*")
    return f" {parts.scheme}://{host}" if parts.scheme in ("http", "https") and host else ""


def _page(request: Request, name: str) -> FileResponse:
    settings: ServiceSettings = request.app.state.settings
    policy = (
        "default-src 'self'; script-src 'self'; connect-src 'self'; "
        f"img-src 'self' data: blob:{_tile_source(settings.tile_url)}; "
        "style-src 'self' 'unsafe-inline'; "  # Leaflet positions its panes and markers with inline styles
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
    headers = {**_REVALIDATE, "Content-Security-Policy": policy, "Referrer-Policy": "same-origin"}
    if not (STATIC_DIR / name).is_file():
        raise NotFoundError(f"The pages are not installed with this copy of vipare ({STATIC_DIR} is missing).")
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8", headers=headers)


@router.get("/", include_in_schema=False)
def agent_page(request: Request) -> FileResponse:
    """The field agent's page: take or pick a photo, send it with the phone's position."""
    return _page(request, "agent.html")


@router.get("/manager", include_in_schema=False)
def manager_page(request: Request) -> FileResponse:
    """The cleansing manager's map of incidents."""
    return _page(request, "manager.html")


@router.get("/manager/round", include_in_schema=False)
def round_page(request: Request) -> FileResponse:
    """A crew's round for a day: the visiting order, a map, GPX and GeoJSON, printable."""
    return _page(request, "round.html")


@router.get("/manager/stats", include_in_schema=False)
def statistics_page(request: Request) -> FileResponse:
    """The council's statistics: weekly figures, the median time to clean, the places of repeated deposits."""
    return _page(request, "stats.html")


SHELL: tuple[str, ...] = (
    "/",
    "/static/agent.js",
    "/static/outbox.js",
    "/static/common.js",
    "/static/i18n.js",
    "/static/style.css",
    "/static/icons/icon-192.png",
    "/manifest.webmanifest",
    "/vendor/exifr/lite.esm.js",
    "/vendor/leaflet/leaflet.js",
    "/vendor/leaflet/leaflet.css",
    "/v1/ui-config",
)
"""What the agent page's service worker keeps so that the page opens without a network."""
_SHELL_FILES = ("agent.html", "agent.js", "outbox.js", "common.js", "i18n.js", "style.css", "sw.js")


def _manifest(lang: str) -> dict[str, Any]:
    french = lang == "fr"
    return {
        "name": "vipare · Signaler un dépôt" if french else "vipare · Report a deposit",
        "short_name": "vipare",
        "description": (
            "Photographier un dépôt sauvage et l'envoyer avec sa position, même sans réseau."
            if french else "Photograph an illegal dumping deposit and send it with its place, even offline."
        ),
        "lang": lang,
        "id": "/",
        "start_url": "/",
        "scope": "/",
        "display": "standalone",
        "orientation": "portrait",
        "background_color": "#ffffff",
        "theme_color": "#1f4e79",
        "icons": [
            {"src": "/static/icons/icon-192.png", "sizes": "192x192", "type": "image/png", "purpose": "any"},
            {"src": "/static/icons/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "any"},
            {"src": "/static/icons/maskable-192.png", "sizes": "192x192", "type": "image/png", "purpose": "maskable"},
            {"src": "/static/icons/maskable-512.png", "sizes": "512x512", "type": "image/png", "purpose": "maskable"},
            {"src": "/static/icons/icon.svg", "sizes": "any", "type": "image/svg+xml", "purpose": "any"},
        ],
    }


@router.get("/manifest.webmanifest", include_in_schema=False)
def web_manifest(request: Request) -> Response:
    """The agent page's web app manifest (installable: name, icons, standalone), in the browser's language."""
    accept = request.headers.get("accept-language", "").lower()
    lang = "fr" if accept.startswith("fr") else "en"
    body = json.dumps(_manifest(lang), ensure_ascii=False)
    return Response(body, media_type="application/manifest+json", headers={**_REVALIDATE, "Vary": "Accept-Language"})


def shell_version() -> str:
    """A hash of the page shell's files: a new release gets a new service worker and a new cache."""
    digest = hashlib.sha256()
    for name in _SHELL_FILES:
        path = STATIC_DIR / name
        digest.update(path.read_bytes() if path.is_file() else b"")
    for package, name in (("exifr", "lite.esm.js"), ("leaflet", "leaflet.js")):
        path = NODE_MODULES / VENDOR[package] / name
        digest.update(str(path.stat().st_mtime_ns if path.is_file() else 0).encode())
    return digest.hexdigest()[:16]


@router.get("/sw.js", include_in_schema=False)
def service_worker() -> Response:
    """The agent page's service worker, at the root so that its scope is the whole page.

    Its cache is named after :func:`shell_version` and it lists :data:`SHELL`, both written into
    the script here, so that any change of the page makes the browser install a new worker.
    """
    path = STATIC_DIR / "sw.js"
    if not path.is_file():
        raise NotFoundError(f"The pages are not installed with this copy of vipare ({STATIC_DIR} is missing).")
    script = (
        path.read_text(encoding="utf-8")
        .replace('"__SHELL_VERSION__"', json.dumps(shell_version()))
        .replace('["__SHELL__"]', json.dumps(list(SHELL)))
    )
    return Response(script, media_type="text/javascript; charset=utf-8", headers=_REVALIDATE)


async def _serve(directory: Path, path: str, request: Request) -> Response:
    # StaticFiles keeps requests inside the folder and answers 304 to a matching ETag.
    files = StaticFiles(directory=directory, check_dir=False)
    response = await files.get_response(os.path.normpath(path), request.scope)
    response.headers.update(_REVALIDATE)
    return response


@router.get("/static/{path:path}", include_in_schema=False)
async def static_file(path: str, request: Request) -> Response:
    """The pages' own scripts and styles."""
    return await _serve(STATIC_DIR, path, request)


@router.get("/vendor/{package}/{path:path}", include_in_schema=False)
async def vendor_file(package: str, path: str, request: Request) -> Response:
    """Leaflet, Leaflet.markercluster and Swagger UI, from ``serving/web/node_modules``."""
    if package not in VENDOR:
        raise NotFoundError(f"No front-end library is called {package!r}.")
    directory = NODE_MODULES / VENDOR[package]
    if not directory.is_dir():
        raise NotFoundError(f"The front-end library {package} is not installed on the server: run {_INSTALL}.")
    if package in VENDOR_FILES and path not in VENDOR_FILES[package]:
        raise NotFoundError(f"{package} has no file {path!r} here.")
    return await _serve(directory, path, request)


@router.get("/docs", include_in_schema=False)
def docs_page(request: Request) -> HTMLResponse:
    """The API's documentation (Swagger UI), its script and style served from ``serving/web/node_modules``."""
    if not (NODE_MODULES / VENDOR["swagger-ui"]).is_dir():
        raise NotFoundError(
            f"The documentation page's Swagger UI is not installed on the server: run {_INSTALL}. The API's "
            "description is at /openapi.json."
        )
    page = get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} API",
        swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},  # else Swagger UI may ask validator.swagger.io
    )
    # The page's one inline script (Swagger UI's set-up) is allowed by its hash, nothing else inline.
    inline = b"".join(_INLINE_SCRIPT.findall(bytes(page.body)))
    digest = base64.b64encode(hashlib.sha256(inline).digest()).decode()
    policy = (
        f"default-src 'self'; script-src 'self' 'sha256-{digest}'; connect-src 'self'; img-src 'self' data:; "
        "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
    page.headers.update({"Content-Security-Policy": policy, "Referrer-Policy": "same-origin"})
    return page


def ui_config(settings: ServiceSettings) -> dict[str, Any]:
    """What the pages need to know about this service (no secret, no data)."""
    installed = all((NODE_MODULES / VENDOR[name]).is_dir() for name in MAP_LIBRARIES)
    return {
        "tile_url": settings.tile_url or None,
        "tile_attribution": settings.tile_attribution,
        "map_library": installed,
        "map_library_install": _INSTALL,
        "max_image_bytes": settings.max_image_bytes,
        "depot": None if settings.depot_lat is None or settings.depot_lon is None
        else {"lat": settings.depot_lat, "lon": settings.depot_lon},
        "upload_long_side": settings.upload_long_side,
        "upload_jpeg_quality": settings.upload_jpeg_quality,
        "classes": class_names(),
        "deposit_classes": sorted(DEPOSIT_CLASSES),
        "class_families": dict(FAMILIES),
        "statuses": [s.value for s in Status],
        "open_statuses": [s.value for s in Status if s in OPEN_STATUSES],
        "transitions": {s.value: sorted(t.value for t in ALLOWED_TRANSITIONS[s]) for s in Status},
    }


@router.get("/v1/ui-config", tags=["pages"], summary="What the pages need to know")
def get_ui_config(request: Request) -> dict[str, Any]:
    """The map's tile layer (none: a plain background), whether the map library is installed, the
    upload limit, the classes (in the model's order) and which are deposits, and the workflow (allowed
    changes from each status). No key needed.
    """
    return ui_config(request.app.state.settings)

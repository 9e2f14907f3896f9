"""The `kubemill ui` web application: the static front end, its JSON API and the webhook run endpoints.

One aiohttp application. `/api/ui/...` (kubemill.ui.api) and `/api/w/...` (Windmill-compatible run endpoints)
act with the caller's own token; `/api/h/...` serves HttpTriggers; anything else is the bundled single-page
front end from `static/` (built from `ui/` by `npm run build`), with `index.html` for client-side routes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from kubemill.models.triggers import MAX_BODY_BYTES
from kubemill.ui import api, webhooks
from kubemill.ui.kubeapi import ApiServer, KubeApi

STATIC = Path(__file__).resolve().parent / "static"


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if not request.path.startswith("/api/"):
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "frame-ancestors 'none'",
        )
        response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def static_routes(root: Path) -> list[web.RouteDef]:
    async def index(request: web.Request) -> web.StreamResponse:
        page = root / "index.html"
        if not page.is_file():
            return web.Response(
                status=503,
                text="the UI bundle is not built: run `npm ci && npm run build` in ui/ "
                "(the API works without it)",
            )
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

    async def asset(request: web.Request) -> web.StreamResponse:
        path = (root / "assets" / request.match_info["file"]).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            return await index(request)
        return web.FileResponse(path, headers={"Cache-Control": "public, max-age=31536000, immutable"})

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    return [
        web.get("/healthz", healthz),
        web.get("/assets/{file:.+}", asset),
        web.get("/{tail:(?!api/).*}", index),
    ]


def build_app(
    server: ApiServer,
    *,
    static: Path = STATIC,
    triggers: bool = False,
    wait_seconds: float = 60.0,
) -> web.Application:
    """The application; the Kubernetes session opens on startup and closes on cleanup."""
    app = web.Application(client_max_size=MAX_BODY_BYTES + 1, middlewares=[security_headers])
    app[webhooks.SETTINGS] = webhooks.WebhookSettings(wait_seconds=wait_seconds, triggers=triggers)

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with KubeApi.session() as client:
            app[webhooks.API] = KubeApi(server, client)
            yield

    app.cleanup_ctx.append(session)
    app.add_routes(webhooks.routes())
    app.add_routes(api.routes())
    app.add_routes(static_routes(static))
    return app

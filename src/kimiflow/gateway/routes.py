"""The gateway's routes put together: ``build_app(gateway)`` and ``serve(gateway, host, port)``.

The route modules take a ``Gateway``; ``Gateway`` itself never imports them (this module does), so
the package has no import circle.
"""

from __future__ import annotations

from aiohttp import web

from kimiflow.gateway import admin, files, page, proxy
from kimiflow.gateway.app import Gateway


def build_app(gw: Gateway) -> web.Application:
    """The aiohttp application serving ``gw``: the caller's API, files, ``/admin/`` and the usage page."""
    gw.page_sessions = page.Sessions()
    app = web.Application(client_max_size=files.MAX_UPLOAD_BYTES)
    proxy.add_routes(app, gw)
    files.add_routes(app, gw)
    admin.add_routes(app, gw)
    page.add_routes(app, gw)
    return app


async def serve(gw: Gateway, host: str = "127.0.0.1", port: int = 8787) -> str:
    """Start serving ``gw`` on ``host:port`` (0 picks a free port); returns the URL. ``gw.stop()`` ends it.

    >>> url = await serve(Gateway(settings), "127.0.0.1", 8787)
    """
    return await gw.start(build_app(gw), host, port)

"""What the Airflow UI shows for kfp-bridge: the local run page, served by the plugin.

Importing this package is cheap (no FastAPI): the plugin module that registers the
page is imported by every Airflow process, and only the api-server serves it.
"""

from __future__ import annotations

from typing import Any


class LazyRunPageApp:
    """ASGI app that builds ``kfp_bridge.ui.run_page.create_app()`` on its first request."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._app is None:
            from kfp_bridge.ui.run_page import create_app

            self._app = create_app()
        await self._app(scope, receive, send)

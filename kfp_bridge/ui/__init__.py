"""What the Airflow UI shows for kfp-bridge: the local run page, served by the plugin.

Importing this package is cheap (no FastAPI): the plugin module that registers the
page is imported by every Airflow process, and only the api-server serves it.
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyApp:
    """ASGI app that imports and builds ``module:factory`` on its first request.

    The plugin is loaded by every Airflow process; FastAPI, Jinja and the page's own
    imports are paid only by the api-server, when a page is first asked for.
    """

    def __init__(self, target: str) -> None:
        self._target = target
        self._app: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._app is None:
            module, _, factory = self._target.partition(":")
            self._app = getattr(importlib.import_module(module), factory)()
        await self._app(scope, receive, send)


class LazyRunPageApp(LazyApp):
    """The local run page (``kfp_bridge.ui.run_page.create_app``), built on first request."""

    def __init__(self) -> None:
        super().__init__("kfp_bridge.ui.run_page:create_app")

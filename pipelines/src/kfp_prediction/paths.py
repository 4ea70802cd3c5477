"""Local paths of the pipeline side: where a relative warehouse or model path points.

Its own module so the model loader, the demo tools and the warehouse share one rule without
importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

HOME_ENV = "KFP_BRIDGE_HOME"


def resolve_local_path(value: str) -> Path:
    """A local path or ``file://`` URI; relative paths are taken from $KFP_BRIDGE_HOME or cwd."""
    if value.startswith("file://"):
        parsed = urlparse(value)
        value = parsed.netloc + parsed.path
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(os.environ.get(HOME_ENV) or os.getcwd()) / path
    return path

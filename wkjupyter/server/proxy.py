"""The jupyter-server-proxy entry point: JupyterLab's launcher can start ``wkjupyter serve``.

Registered under ``jupyter_serverproxy_servers`` in ``pyproject.toml``. The proxy strips its
``{base_url}wkjupyter-serve/`` prefix, so the standalone app serves at ``/``; the proxy admits
only logged-in Jupyter users (jupyter-server-proxy cannot disable that), so this is for
trying a deployment from JupyterLab, while external viewers use the extension's own routes.
The launcher opens the standalone app's landing page (``wkjupyter/``). The proxy forwards the
browser's query string, Jupyter's ``?token=`` included: the app's logs redact it
(:mod:`wkjupyter.server.redact`).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["setup_wkjupyter_serve"]


def setup_wkjupyter_serve() -> dict[str, Any]:
    """The ``ServerProcess`` settings of the standalone server (jupyter-server-proxy 4)."""
    return {
        "command": [
            sys.executable,
            "-m",
            "wkjupyter.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--base-url",
            "/",
        ],
        "timeout": 30,
        "absolute_url": False,
        "new_browser_tab": True,
        "launcher_entry": {
            "enabled": True,
            "title": "wkjupyter server",
            "path_info": "wkjupyter-serve/wkjupyter/",
        },
    }

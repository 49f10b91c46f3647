"""The notebook-facing facade: ``Hub``, ``Dataset``, ``Link``.

Widgets, the CLI and the server's REST API add no logic of their own: they call the same
catalog services. Every call runs as the hub's acting user and is checked against the
catalog's permission rules.
"""

from __future__ import annotations

from wkjupyter.hub._dataset import Dataset, TagSet
from wkjupyter.hub._hub import Hub
from wkjupyter.hub._link import NEUROGLANCER_DEMO, Link, ZarrFormat

__all__ = ["NEUROGLANCER_DEMO", "Dataset", "Hub", "Link", "TagSet", "ZarrFormat"]

"""Serve every dataset and link as OME-Zarr over HTTP (ARCHITECTURE.md §5).

The Zarr v2 / NGFF 0.4 tree lives under ``zarr/``, the Zarr v3 / NGFF 0.5 tree under
``zarr3/`` and what a share link grants under ``links/<token>/``. The pure groundwork is here
so far: data-route key validation (``_keys``) and HTTP Range/ETag helpers (``_http``).
"""

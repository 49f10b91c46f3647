"""Serve every dataset and link as OME-Zarr over HTTP (docs/architecture.md §6).

The Zarr v2 / NGFF 0.4 tree lives under ``zarr/``, the Zarr v3 / NGFF 0.5 tree under
``zarr3/`` and what a share link grants under ``links/<token>/``; the REST API under
``api/``. Modules, from the pure to the hosts:

- ``_keys``, ``_http``: path validation, Range and ETag rules (pure functions);
- ``view``, ``metadata``: a dataset as served arrays, and the documents describing them;
- ``encode``: re-encoding chunks that cannot be passed through;
- ``data``: access per request, cached views, chunks, link-use accounting;
- ``handlers``, ``rest``: the tornado handlers (HTTP semantics; the REST API);
- ``extension``, ``standalone``, ``proxy``: the Jupyter extension, ``wkjupyter serve``, the
  jupyter-server-proxy entry point; ``runtime``: how kernels find their server.

Nothing is imported here: kernels import ``runtime`` without pulling in tornado.
"""

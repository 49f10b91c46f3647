"""The landing pages: ``{base_url}wkjupyter/``, ``zarr/`` and ``zarr3/``.

Where a browser lands (the demo's and ``wkjupyter serve``'s printed address, JupyterLab's
launcher): the datasets the caller may see, each with its Zarr v2 and v3 URLs, a Neuroglancer
link and zarr-python / xarray snippets to copy. A JSON client gets the same as
``{"entries": [...], "datasets": [...], "total": n}``: ``entries`` as in every directory
listing (:func:`wkjupyter.server.metadata.listing`), ``datasets`` as the REST API's
``api/datasets`` shows them, limited to what an anonymous caller may know.

Visibility is the catalog's: an anonymous caller sees the public datasets only, a logged-in
one whatever :func:`~wkjupyter.catalog.permissions.visible_datasets_clause` lets them see. A
private dataset never appears for anyone else, as its data routes answer 404.

fsspec's HTTP ``ls`` (what zarr-python lists with) scrapes every ``href`` and every bare URL of
a page, so a tree page links relatively only to its datasets, and every other URL on it is
absolute outside the tree or fully percent-encoded (the Neuroglancer state).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, unquote

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from wkjupyter.catalog import users as user_service
from wkjupyter.catalog.models import DatasetRecord
from wkjupyter.catalog.permissions import visible_datasets_clause
from wkjupyter.datasource import DataSource
from wkjupyter.sources.neuroglancer import NEUROGLANCER_DEMO, neuroglancer_state_url

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement
    from sqlalchemy.orm import Session

    from wkjupyter.server._keys import Tree

__all__ = ["CSP", "MAX_LISTED", "Listed", "Shown", "as_json", "page", "visible"]

#: The most datasets one page lists (by name); the REST API searches and pages the rest.
MAX_LISTED: Final = 1000
_TREES: Final[dict[Tree, str]] = {
    "zarr": "Zarr v2 + OME-NGFF 0.4",
    "zarr3": "Zarr v3 + OME-NGFF 0.5",
}


@dataclass(frozen=True, slots=True)
class Shown:
    """One dataset as the landing pages show it."""

    name: str
    description: str
    public: bool
    tags: tuple[str, ...]
    layers: tuple[tuple[str, str, tuple[str, ...]], ...]  # (name, category, mag paths)
    zarr_url: str
    zarr3_url: str
    neuroglancer_url: str | None  # None for private datasets: Neuroglancer reads anonymously


@dataclass(frozen=True, slots=True)
class Listed:
    """What one caller may see: the first :data:`MAX_LISTED` datasets and how many in all."""

    datasets: tuple[Shown, ...]
    total: int
    user: str | None


def visible(session: Session, user: str | None, root: str, limit: int = MAX_LISTED) -> Listed:
    """The datasets ``user`` (None: anonymous) may see, served under ``root`` (the URL of
    ``{base_url}wkjupyter/``)."""
    where: ColumnElement[bool]
    if user is None:
        where = DatasetRecord.public.is_(True)
    else:
        where = visible_datasets_clause(user_service.actor_for(session, user))
    total = session.scalar(select(func.count()).select_from(DatasetRecord).where(where)) or 0
    records = session.scalars(
        select(DatasetRecord)
        .where(where)
        .order_by(DatasetRecord.slug)
        .limit(limit)
        .options(selectinload(DatasetRecord.tags))
    )
    return Listed(tuple(_shown(r, root) for r in records), total, user)


def _shown(record: DatasetRecord, root: str) -> Shown:
    datasource = DataSource.from_json(record.datasource)
    name = quote(record.slug, safe="")
    zarr_url = f"{root}zarr/{name}/"
    layers = tuple(
        (layer.name, layer.category, tuple(str(m) for m in layer.mags))
        for layer in datasource.layers.values()
    )
    neuroglancer = None
    if record.public and datasource.layers:
        names = list(datasource.layers)
        neuroglancer = neuroglancer_state_url(NEUROGLANCER_DEMO, datasource, names, zarr_url)
    return Shown(
        name=record.slug,
        description=record.description or "",
        public=record.public,
        tags=tuple(t.name for t in record.tags),
        layers=layers,
        zarr_url=zarr_url,
        zarr3_url=f"{root}zarr3/{name}/",
        neuroglancer_url=neuroglancer,
    )


# -- JSON ----------------------------------------------------------------------------------------


def as_json(listed: Listed, tree: Tree | None) -> dict[str, Any]:
    """The JSON answer: the root's ``entries`` are the trees, a tree's its datasets."""
    entries = ["zarr/", "zarr3/"] if tree is None else [f"{d.name}/" for d in listed.datasets]
    datasets = [
        {
            "name": d.name,
            "description": d.description,
            "public": d.public,
            "tags": list(d.tags),
            "layers": [name for name, _, _ in d.layers],
            "zarr_url": d.zarr_url,
            "zarr3_url": d.zarr3_url,
            "neuroglancer_url": d.neuroglancer_url,
        }
        for d in listed.datasets
    ]
    return {"entries": entries, "datasets": datasets, "total": listed.total}


# -- HTML ----------------------------------------------------------------------------------------

_SCRIPT: Final = """
for (const button of document.querySelectorAll("button.copy")) {
  button.addEventListener("click", () => {
    const code = button.parentElement.querySelector("code");
    const done = (label) => {
      button.textContent = label;
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    };
    const select = () => { getSelection().selectAllChildren(code); done("Press Ctrl+C"); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(code.textContent).then(() => done("Copied"), select);
    } else {
      select();
    }
  });
}
"""
_STYLE: Final = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 62rem;
       padding: 1rem 1.5rem 3rem; color: #1d2327; }
header p, .hint { color: #50575e; }
nav a { margin-right: 1rem; }
.dataset { border: 1px solid #dcdcde; border-radius: 6px; padding: .3rem 1rem .8rem;
           margin: 1rem 0; }
h2 { font-size: 1.15rem; margin: .6rem 0 .2rem; }
.badge { font-size: .75rem; font-weight: normal; border-radius: 3px; padding: 1px 6px;
         vertical-align: middle; background: #e7f5ea; color: #11602a; }
.badge.private { background: #fcf0e3; color: #8a4d00; }
.meta { margin: .2rem 0; color: #50575e; }
.url, .snippet { display: flex; gap: .6rem; align-items: flex-start; margin: .3rem 0; }
.url span { min-width: 12rem; color: #50575e; }
code { font: 13px ui-monospace, monospace; background: #f6f7f7; padding: 1px 4px;
       white-space: nowrap; }
.url code { white-space: normal; overflow-wrap: anywhere; }
pre { flex: 1; margin: 0; background: #f6f7f7; padding: .5rem .7rem; overflow-x: auto; }
pre code { padding: 0; white-space: pre; }
button.copy { font-size: .8rem; cursor: pointer; }
details { margin: .3rem 0; }
summary { cursor: pointer; color: #2271b1; }
"""


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


#: The pages run nothing but their own copy script, load nothing and submit nothing.
CSP: Final = (
    f"default-src 'none'; script-src 'sha256-{_sha256(_SCRIPT)}'; "
    f"style-src 'sha256-{_sha256(_STYLE)}'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'"
)


def page(listed: Listed, tree: Tree | None, root: str, login_hint: str) -> str:
    """The HTML page of ``root`` (``tree`` None) or of one tree; ``login_hint`` tells an
    anonymous caller how to see private datasets."""
    title = "wkjupyter: datasets" if tree is None else f"wkjupyter: {tree}/ ({_TREES[tree]})"
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(title)}</title>\n<style>{_STYLE}</style></head>\n<body>",
        _header(listed, tree, root, login_hint),
        "<main>",
        *(_dataset(d, tree) for d in listed.datasets),
        "</main>",
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n",
    ]
    return "\n".join(parts)


def _header(listed: Listed, tree: Tree | None, root: str, login_hint: str) -> str:
    if tree is None:
        about = (
            "Volumetric datasets served as OME-Zarr: <b>Zarr v2 + OME-NGFF 0.4</b> under "
            '<a href="zarr/">zarr/</a>, <b>Zarr v3 + OME-NGFF 0.5</b> under '
            '<a href="zarr3/">zarr3/</a>. Neuroglancer, napari, Fiji, zarr-python, tensorstore '
            'and xarray open these URLs directly. <a href="?format=json">JSON</a>'
        )
    else:
        # Absolute links only: fsspec's ls takes any relative link for an entry of the tree.
        other: Tree = "zarr3" if tree == "zarr" else "zarr"
        about = (
            f"The <b>{_TREES[tree]}</b> tree: one OME-Zarr group per dataset. "
            f'<a href="{_attr(root)}">All datasets</a> · '
            f'<a href="{_attr(root + other)}/">{other}/ ({_TREES[other]})</a> · '
            "JSON: add <code>?format=json</code>"
        )
    plural = "" if listed.total == 1 else "s"
    if listed.user is None:
        who = f"{listed.total} public dataset{plural}. {_text(login_hint)}"
    else:
        who = f"{listed.total} dataset{plural} that {_text(listed.user)} may see."
    if len(listed.datasets) < listed.total:
        who += f" This page lists the first {len(listed.datasets)} by name (api/datasets searches)."
    return f'<header>\n<h1>wkjupyter</h1>\n<p>{about}</p>\n<p class="hint">{who}</p>\n</header>'


def _dataset(d: Shown, tree: Tree | None) -> str:
    own = d.zarr3_url if tree == "zarr3" else d.zarr_url
    href = f"{quote(d.name, safe='')}/" if tree is not None else f"zarr/{quote(d.name, safe='')}/"
    badge = '<span class="badge">public</span>' if d.public else (
        '<span class="badge private">private</span>'
    )  # fmt: skip
    layers = ", ".join(f"{name} ({category})" for name, category, _ in d.layers) or "none"
    meta = f"Layers: {_text(layers)}"
    if d.tags:
        meta += f" · Tags: {_text(', '.join(d.tags))}"
    rows = [
        f'<div class="url"><span>{label}</span><code>{_text(url)}</code>'
        '<button type="button" class="copy">Copy</button></div>'
        for label, url in ((_TREES["zarr"], d.zarr_url), (_TREES["zarr3"], d.zarr3_url))
    ]
    lines = [
        f'<section class="dataset" id="{_attr("ds-" + d.name)}">',
        f'<h2><a href="{_attr(href)}">{_text(d.name)}</a> {badge}</h2>',
    ]
    if d.description:
        lines.append(f'<p class="description">{_text(d.description)}</p>')
    lines += [f'<p class="meta">{meta}</p>', *rows]
    if d.neuroglancer_url is not None:
        lines.append(
            f'<p><a href="{_attr(_opaque(d.neuroglancer_url))}" target="_blank" '
            'rel="noopener noreferrer">Open in Neuroglancer</a></p>'
        )
    else:
        lines.append(
            '<p class="hint">Private: these URLs answer only callers who may see the dataset. '
            f"Share it through a link (<code>wkjupyter link create {_text(d.name)}</code>): "
            "Neuroglancer, zarr-python and xarray open a link's URLs like these.</p>"
        )
    if d.layers and d.public:
        zarr_format = 3 if tree == "zarr3" else 2
        for label, code in _snippets(own, d.layers[0], zarr_format):
            lines.append(
                f"<details><summary>{label}</summary>"
                f'<div class="snippet"><pre class="python"><code>{_text(code)}</code></pre>'
                '<button type="button" class="copy">Copy</button></div></details>'
            )
    lines.append("</section>")
    return "\n".join(lines)


def _snippets(
    url: str, layer: tuple[str, str, tuple[str, ...]], zarr_format: int
) -> list[tuple[str, str]]:
    """zarr-python and xarray code that opens ``layer`` of the dataset at ``url``."""
    name, _, mags = layer
    finest = mags[0]
    key = json.dumps(f"{name}/{finest}")
    others = json.dumps(list(mags[1:]))
    zarr_code = (
        "import zarr\n\n"
        f"url = {json.dumps(url)}\n"
        f'group = zarr.open_group(url, mode="r", zarr_format={zarr_format})\n'
        f"image = group[{key}]  # layer {json.dumps(name)}, mag {finest}: (c, z, y, x)\n"
        "print(image.shape, image.dtype, image.chunks)"
    )
    xarray_code = (
        "import xarray as xr\n\n"
        f"url = {json.dumps(url)}\n"
        "# One mag of the layer: the mags' shapes differ, one Dataset cannot hold them all.\n"
        "# mask_and_scale=False: keep the fill value (label 0) as data.\n"
        f"ds = xr.open_zarr(url + {json.dumps(name + '/')}, zarr_format={zarr_format}, "
        f"consolidated=True,\n                  drop_variables={others}, "
        "mask_and_scale=False)\n"
        f"print(ds[{json.dumps(finest)}])"
    )
    return [("zarr-python", zarr_code), ("xarray", xarray_code)]


def _opaque(url: str) -> str:
    """A Neuroglancer URL with its whole state percent-encoded: the same state for
    Neuroglancer (it decodes the fragment), no bare data URL for fsspec to scrape."""
    host, sep, state = url.partition("#!")
    return f"{host}{sep}{quote(unquote(state), safe='')}" if sep else url


def _text(text: str) -> str:
    # Quotes stay: text nodes need no escaped quotes, and "&quot;" after a URL would read as
    # part of it to fsspec's bare-URL scraper.
    return html.escape(text, quote=False)


def _attr(text: str) -> str:
    return html.escape(text, quote=True)

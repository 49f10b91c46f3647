"""The ``wkjupyter`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from wkjupyter._cli_secrets import BEARER_TOKEN, HTTP_PASSWORD, S3_SECRET, SERVE_TOKEN
from wkjupyter.errors import PermissionDeniedError, WkJupyterError
from wkjupyter.sources import GcsCredential, HttpCredential, S3Credential

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wkjupyter.hub import Hub
    from wkjupyter.sources._fs import Credential

__all__ = ["EXIT_DENIED", "EXIT_NOT_FOUND", "main"]

# Exit codes: 0 success, 1 failure, 2 usage (argparse), 3 not found, 4 permission denied.
EXIT_NOT_FOUND = 3
EXIT_DENIED = 4


def _credential(args: argparse.Namespace) -> Credential | None:
    """The credential the options describe; secrets as ``_cli_secrets`` reads them."""
    if args.s3_key_id:
        secret = S3_SECRET.value(args, prompt=True)
        if not secret:
            raise SystemExit(f"error: --s3-key-id needs its secret: {S3_SECRET.ways}")
        return S3Credential(args.s3_key_id, secret, endpoint_url=args.s3_endpoint)
    if args.http_user:
        return HttpCredential(args.http_user, HTTP_PASSWORD.value(args, prompt=True) or "")
    if args.bearer_token is not None or args.bearer_token_file is not None:
        return HttpCredential(token=BEARER_TOKEN.value(args, prompt=False))
    if args.gcs_service_account:
        return GcsCredential(Path(args.gcs_service_account).read_text())
    return None


def _cmd_explore(args: argparse.Namespace) -> int:
    from wkjupyter.sources.explore import explore

    report = explore(args.urls, _credential(args), name=args.name)
    if args.json:
        out = {
            "datasource": report.datasource.to_properties() if report else None,
            "steps": [
                {"url": s.url, "format": s.format, "outcome": s.outcome, "message": s.message}
                for s in report.steps
            ],
        }
        print(json.dumps(out, indent=2))
    else:
        print(report)
    return 0 if report else 1


def _hub(args: argparse.Namespace, *, create: bool = False) -> Hub:
    """The catalog as ``--user``. A catalog named by ``--catalog-url`` or
    ``$WKJUPYTER_CATALOG_URL`` must exist unless ``create`` (only ``import`` creates one);
    the default one is created on first use."""
    from wkjupyter.hub import Hub

    hub = Hub(args.catalog_url, args.user, create=create or (False if args.catalog_url else None))
    # Which catalog answers matters: the demo and notebooks use catalogs of their own.
    shown = hub.catalog.engine.url.render_as_string(hide_password=True)
    new = ", new catalog" if hub.catalog.created else ""
    print(f"catalog: {shown} (as {hub.user_name}{new})", file=sys.stderr)
    return hub


def _cmd_ls(args: argparse.Namespace) -> int:
    hub = _hub(args)
    public = {"public": True, "private": False}.get(args.visibility or "")
    found = hub.summaries(search=args.search, tags=args.tag or None, public=public)
    if args.json:
        print(json.dumps(found, indent=2, default=str))
        return 0
    if not found:
        filtered = args.search or args.tag or public is not None
        print("no datasets match" if filtered else _NO_DATASETS)
        return 0
    for info in found:
        tags = ", ".join(info["tags"]) or "-"
        layers = ", ".join(info["layers"])
        visibility = "public" if info["public"] else "private"
        print(f"{info['name']:30s} {visibility:8s} tags: {tags:20s} layers: {layers}")
    return 0


_NO_DATASETS = "no datasets in this catalog (`wkjupyter import URL` adds one)"


def _cmd_import(args: argparse.Namespace) -> int:
    hub = _hub(args, create=True)
    credential = _credential(args)
    report = hub.explore(args.urls, credential)
    if not report:
        print(report, file=sys.stderr)
        print("error: nothing to import (see the steps above)", file=sys.stderr)
        return 1
    ds = hub.add_remote(
        report,
        name=args.name,
        tags=args.tag or (),
        public=args.public,
        credential=credential,
        description=args.description or "",
    )
    layers = ", ".join(ds.layers)
    print(f"imported {ds.name!r} ({'public' if args.public else 'private'}): {layers}")
    return 0


def _cmd_tag(args: argparse.Namespace) -> int:
    ds = _hub(args).dataset(args.dataset)
    if args.set is not None:
        ds.tags = args.set
    for tag in args.add or ():
        ds.tags.add(tag)
    for tag in args.remove or ():
        ds.tags.discard(tag)
    print(f"{ds.name}: {', '.join(ds.tags) or '(no tags)'}")
    return 0


_NO_SERVER_URL = (
    "note: no public URL of the wkjupyter server is known, so this is the link's path below "
    "it; set WKJUPYTER_PUBLIC_URL (e.g. https://hub.example.org/user/alice/) for full URLs"
)


def _cmd_link(args: argparse.Namespace) -> int:
    hub = _hub(args)
    if args.link_command == "create":
        ds = hub.dataset(args.dataset)
        expires = None if args.expires == "never" else args.expires
        link = ds.create_link(expires=expires, label=args.label or "", layers=args.layer)
        if hub.public_url is None:  # outside a server: what to put in front of the path
            print(_NO_SERVER_URL, file=sys.stderr)
        print(link.url if hub.public_url else link.path)
        return 0
    if args.link_command == "ls":
        links = hub.dataset(args.dataset).links()
        if args.json:
            print(json.dumps([json.loads(link.to_json()) for link in links], indent=2))
            return 0
        for link in links:
            info = json.loads(link.to_json())
            state = "revoked" if info["revoked"] else f"expires {info['expires_at'] or 'never'}"
            print(f"{info['id']:5d}  {state:40s} used {info['use_count']}x  {info['label']}")
            print(f"       {info['url'] or info['path']}")
        return 0
    hub.link(args.link_id).revoke()
    print(f"link {args.link_id} revoked")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from wkjupyter.demo import DemoServing, run_demo
    from wkjupyter.paths import data_dir

    if args.no_serve and args.port is not None:
        args.usage_error("--port needs a server: drop --no-serve or --port")
    root = Path(args.data_dir) / "demo" if args.data_dir else data_dir() / "demo"
    serve: DemoServing = "keep" if args.serve else "none" if args.no_serve else "check"
    reports = run_demo(root, serve=serve, port=args.port or 0)
    return 0 if all(reports) else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    from dataclasses import fields

    from wkjupyter.catalog.core import Catalog
    from wkjupyter.catalog.users import default_user_name
    from wkjupyter.server.data import ServeOptions
    from wkjupyter.server.standalone import HttpLimits, serve

    logging.basicConfig(
        level=logging.INFO, format="[%(levelname)s %(asctime)s %(name)s] %(message)s"
    )
    catalog = Catalog(
        args.catalog_url,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        create=False if args.catalog_url else None,  # only the default one is created
    )
    public = args.public_url.rstrip("/") + "/" if args.public_url else None
    token = SERVE_TOKEN.value(args, prompt=False)

    def ready(url: str, api_token: str) -> None:
        print(f"wkjupyter serving {catalog!r} at {url}", flush=True)
        if not token:
            print(f"API token (Authorization: token ...): {api_token}", flush=True)

    options = ServeOptions(chunk_codec=args.chunk_codec, chunk_level=args.chunk_level)
    asyncio.run(
        serve(
            catalog,
            host=args.host,
            port=args.port,
            base_url=args.base_url,
            owner=args.user or default_user_name(),
            token=token,
            public_url=public,
            local_roots=[Path(r) for r in args.allow_local_root or []],
            options=options,
            limits=HttpLimits(**{f.name: getattr(args, f.name) for f in fields(HttpLimits)}),
            ready=ready,
        )
    )
    return 0


def add_credential_options(parser: argparse.ArgumentParser) -> None:
    cred = parser.add_argument_group("credentials (default: anonymous or the environment's)")
    cred.add_argument("--s3-key-id", help="S3 access key id (its secret is asked for if not given)")
    S3_SECRET.add_to(cred)
    cred.add_argument("--s3-endpoint", help="endpoint URL of an S3-compatible store")
    cred.add_argument("--http-user", help="HTTP basic user (a terminal asks for the password)")
    HTTP_PASSWORD.add_to(cred)
    BEARER_TOKEN.add_to(cred, "an HTTP bearer token")
    cred.add_argument("--gcs-service-account", metavar="JSON_FILE")


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
    examples: str = "",
) -> argparse.ArgumentParser:
    """A subcommand: ``summary`` in the list of commands, ``description`` (paragraphs split
    by blank lines) at the top of its ``--help`` and ``examples`` at the bottom."""
    paragraphs = (" ".join(par.split()) for par in description.split("\n\n"))
    epilog = None
    if examples:
        epilog = "examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  ")
    return sub.add_parser(
        name,
        help=summary,
        description="\n\n".join(textwrap.fill(par, 79) for par in paragraphs),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wkjupyter", description="A secure hub for huge volumetric images in Jupyter."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = _command(
        sub, "demo", "write, explore and serve the demo datasets",
        """Write a small synthetic volume (cells and their segmentation, three mags) as
        OME-Zarr, N5 and Neuroglancer precomputed, explore each copy and print the layers
        found.

        Then, by default, register them in a demo catalog of its own, serve them as OME-Zarr
        and read every layer back over HTTP through both Zarr trees. --serve keeps serving
        (open the printed address in a browser); --no-serve stops after exploring.""",
        """
        wkjupyter demo
        wkjupyter demo --serve --port 8765
        wkjupyter demo --no-serve --data-dir /tmp/wkjupyter""",
    )  # fmt: skip
    demo.add_argument("--data-dir", help="where to write (default: the wkjupyter data dir)")
    after = demo.add_mutually_exclusive_group()
    after.add_argument(
        "--serve", action="store_true", help="after reading back, keep serving until Ctrl-C"
    )
    after.add_argument(
        "--no-serve", action="store_true", help="stop after exploring: no catalog, no server"
    )
    demo.add_argument("--port", type=int, help="port to serve on (default: any free port)")
    demo.set_defaults(func=_cmd_demo, usage_error=demo.error)

    ex = _command(
        sub, "explore", "find the layers at one or more URLs",
        """Find the layers stored at one or more URLs (OME-Zarr, Zarr v2/v3, N5, Neuroglancer
        precomputed, webKnossos, or a Neuroglancer link) and print every attempt: URL, format,
        outcome. Several URLs merge into one data source. Nothing is registered (that is
        `import`); the exit status is 1 when nothing is found.""",
        """
        wkjupyter explore https://example.org/cells.ome.zarr
        wkjupyter explore s3://bucket/em.n5 --s3-key-id AKIA... --s3-secret-file ~/.s3-secret
        wkjupyter explore color.zarr precomputed://gs://bucket/seg --json""",
    )  # fmt: skip
    ex.add_argument(
        "urls",
        nargs="+",
        metavar="URL",
        help="path, http(s)://, s3://, gs://, a Neuroglancer source or state URL",
    )
    ex.add_argument("--name", help="name of the merged data source")
    ex.add_argument("--json", action="store_true", help="print the report as JSON")
    add_credential_options(ex)
    ex.set_defaults(func=_cmd_explore)

    def catalog_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--catalog-url", help="SQLAlchemy URL (default: WKJUPYTER_CATALOG_URL "
                       "or SQLite in the data dir)")  # fmt: skip
        p.add_argument("--user", help="act as this user (default: JUPYTERHUB_USER or you)")

    ls = _command(
        sub, "ls", "list the datasets you may see",
        """List the datasets of a catalog that you may see: name, visibility, tags and
        layers. The catalog and the user are printed on stderr: --catalog-url (or
        $WKJUPYTER_CATALOG_URL) chooses another catalog, such as the demo's.""",
        """
        wkjupyter ls --search cortex --tag em
        wkjupyter ls --visibility public --json
        wkjupyter ls --catalog-url sqlite:////path/to/catalog.sqlite""",
    )  # fmt: skip
    ls.add_argument("--search", help="words that must all appear (name, description, tags, layers)")
    ls.add_argument("--tag", action="append", help="only datasets with this tag (repeatable)")
    ls.add_argument("--visibility", choices=["public", "private"])
    ls.add_argument("--json", action="store_true")
    catalog_options(ls)
    ls.set_defaults(func=_cmd_ls)

    imp = _command(
        sub, "import", "explore URLs and register the dataset (no copy)",
        """Explore one or more URLs and register what is found as one dataset of the
        catalog. Only metadata and source URLs are stored, never the data; a credential
        given is stored encrypted and used whenever the dataset is read or served.""",
        """
        wkjupyter import https://example.org/cells.ome.zarr --name cells --tag em --public
        wkjupyter import s3://bucket/em.n5 --s3-key-id AKIA... --s3-secret -   # prompts
        wkjupyter import color.zarr precomputed://gs://bucket/seg --name merged""",
    )  # fmt: skip
    imp.add_argument("urls", nargs="+", metavar="URL")
    imp.add_argument("--name", help="dataset name (default: from the URL)")
    imp.add_argument("--tag", action="append", help="a tag (repeatable)")
    imp.add_argument("--public", action="store_true", help="readable by anyone")
    imp.add_argument("--description")
    add_credential_options(imp)
    catalog_options(imp)
    imp.set_defaults(func=_cmd_import)

    tag = _command(
        sub, "tag", "show or change a dataset's tags",
        """Show a dataset's tags, or change them: --add and --remove (repeatable), or --set
        to replace them all. Prints the tags after the change.""",
        "wkjupyter tag cells --add reviewed --remove draft",
    )  # fmt: skip
    tag.add_argument("dataset")
    tag.add_argument("--add", action="append", metavar="TAG")
    tag.add_argument("--remove", action="append", metavar="TAG")
    tag.add_argument("--set", nargs="*", metavar="TAG", help="replace all tags")
    catalog_options(tag)
    tag.set_defaults(func=_cmd_tag)

    link = _command(
        sub, "link", "private links to a dataset",
        """Private links grant read access to a dataset, or to some of its layers, without a
        login: expiring, revocable URLs that any OME-Zarr client opens.""",
        """
        wkjupyter link create cells --expires 7d --label reviewer
        wkjupyter link ls cells
        wkjupyter link revoke 12""",
    )  # fmt: skip
    link_sub = link.add_subparsers(dest="link_command", required=True)
    create = _command(
        link_sub, "create", "create a link and print its URL",
        """Create a private link to a dataset and print its URL; its Zarr v2 and v3 trees
        are below it at zarr/ and zarr3/.""",
        "wkjupyter link create cells --expires 30d --layer segmentation --label reviewer",
    )  # fmt: skip
    create.add_argument("dataset")
    create.add_argument("--expires", default="30d", help="e.g. 7d, 12h, 2026-12-31, never")
    create.add_argument("--label")
    create.add_argument("--layer", action="append", help="grant only this layer (repeatable)")
    lsl = _command(
        link_sub, "ls", "list a dataset's links",
        "List a dataset's links: id, expiry or revocation, uses, label and URL.",
    )  # fmt: skip
    lsl.add_argument("dataset")
    lsl.add_argument("--json", action="store_true")
    revoke = _command(
        link_sub, "revoke", "revoke a link at once",
        """Revoke a link (by the id `link ls` shows): it stops working on the next request,
        in every server sharing the catalog.""",
    )  # fmt: skip
    revoke.add_argument("link_id", type=int)
    for p in (create, lsl, revoke):
        catalog_options(p)
    link.set_defaults(func=_cmd_link)

    from wkjupyter.server._limits import HttpLimits
    from wkjupyter.server.view import CHUNK_CODECS

    srv = _command(
        sub, "serve", "serve datasets and links as OME-Zarr (standalone)",
        """Serve the catalog's datasets and links as OME-Zarr (Zarr v2 + NGFF 0.4 under
        zarr/, Zarr v3 + NGFF 0.5 under zarr3/) from a plain tornado server, without Jupyter:
        for deployments, and replicas sharing one PostgreSQL catalog.

        The printed address opens a page listing the public datasets with their URLs. The
        REST API under api/ takes the printed token (Authorization: token <token>).""",
        """
        wkjupyter serve --port 8765
        wkjupyter serve --host 0.0.0.0 --base-url /data/ \\
            --public-url https://data.example.org/data/ --catalog-url postgresql+psycopg://...""",
    )  # fmt: skip
    srv.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    srv.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    srv.add_argument("--base-url", default="/", help="URL prefix, e.g. /data/")
    srv.add_argument("--public-url", help="public base URL for links behind a proxy")
    srv.add_argument("--data-dir", help="where the default catalog and its key live")
    SERVE_TOKEN.add_to(srv, "the API token (else a random one is printed)")
    default = HttpLimits()
    limits = srv.add_argument_group(
        "limits (a client beyond them gets 414, 431 or 503, or is disconnected)"
    )
    for name, kind, metavar, text in (
        ("header-timeout", float, "SECONDS",
         "time to send a request's line and headers, and to keep an idle connection"),
        ("body-timeout", float, "SECONDS", "time to send a request body"),
        ("max-connections", int, "N", "connections served at once"),
        ("max-request-line", int, "BYTES", "longest request line (method, path, query)"),
        ("max-header-size", int, "BYTES", "largest request line and headers"),
        ("max-body-size", int, "BYTES", "largest request body"),
    ):  # fmt: skip
        limits.add_argument(
            f"--{name}",
            type=kind,
            metavar=metavar,
            default=getattr(default, name.replace("-", "_")),
            help=f"{text} (default: %(default)s)",
        )
    srv.add_argument(
        "--allow-local-root",
        action="append",
        metavar="DIR",
        help="directory the REST import may read local paths from (repeatable)",
    )
    srv.add_argument(
        "--chunk-codec",
        choices=CHUNK_CODECS,
        default="zstd",
        help="codec for chunks that cannot be passed through",
    )
    srv.add_argument("--chunk-level", type=int, default=1)
    catalog_options(srv)
    srv.set_defaults(func=_cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except PermissionDeniedError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DENIED
    except KeyError as err:  # our not-found errors (dataset, link, user ...)
        if not isinstance(err, WkJupyterError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (WkJupyterError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The ``wkjupyter`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from wkjupyter.errors import WkJupyterError
from wkjupyter.sources import GcsCredential, HttpCredential, S3Credential

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wkjupyter.sources._fs import Credential

__all__ = ["main"]


def _credential(args: argparse.Namespace) -> Credential | None:
    if args.s3_key_id:
        if not args.s3_secret:
            raise SystemExit("--s3-key-id needs --s3-secret")
        return S3Credential(args.s3_key_id, args.s3_secret, endpoint_url=args.s3_endpoint)
    if args.http_user:
        return HttpCredential(args.http_user, args.http_password or "")
    if args.bearer_token:
        return HttpCredential(token=args.bearer_token)
    if args.gcs_service_account:
        return GcsCredential(Path(args.gcs_service_account).read_text())
    return None


def _cmd_explore(args: argparse.Namespace) -> int:
    from wkjupyter.sources.explore import explore

    report = explore(args.urls, _credential(args), name=args.name)
    if args.json:
        out = {
            "datasource": report.datasource.to_properties() if report.datasource else None,
            "steps": [
                {"url": s.url, "format": s.format, "outcome": s.outcome, "message": s.message}
                for s in report.steps
            ],
        }
        print(json.dumps(out, indent=2))
    else:
        print(report)
    return 0 if report.datasource is not None else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from wkjupyter.demo import run_demo
    from wkjupyter.paths import data_dir

    root = Path(args.data_dir) / "demo" if args.data_dir else data_dir() / "demo"
    reports = run_demo(root)
    return 0 if all(r.datasource is not None for r in reports) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wkjupyter", description="A secure hub for huge volumetric images in Jupyter."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="write the demo datasets and explore them")
    demo.add_argument("--data-dir", help="where to write (default: the wkjupyter data dir)")
    demo.set_defaults(func=_cmd_demo)

    ex = sub.add_parser("explore", help="find the layers at one or more URLs")
    ex.add_argument(
        "urls",
        nargs="+",
        metavar="URL",
        help="path, http(s)://, s3://, gs://, a Neuroglancer source or state URL",
    )
    ex.add_argument("--name", help="name of the merged data source")
    ex.add_argument("--json", action="store_true", help="print the report as JSON")
    cred = ex.add_argument_group("credentials (default: anonymous or the environment's)")
    cred.add_argument("--s3-key-id")
    cred.add_argument("--s3-secret")
    cred.add_argument("--s3-endpoint", help="endpoint URL of an S3-compatible store")
    cred.add_argument("--http-user")
    cred.add_argument("--http-password")
    cred.add_argument("--bearer-token")
    cred.add_argument("--gcs-service-account", metavar="JSON_FILE")
    ex.set_defaults(func=_cmd_explore)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except WkJupyterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Secrets in query strings never reach a log of ``wkjupyter serve`` (the extension's log is
tested in test_extension.py).

JupyterLab's launcher proxies the standalone server with the browser's query string, so
Jupyter's own ``?token=`` arrives there; signed storage URLs carry ``X-Amz-Signature``. Every
logged URL has such parameters' values replaced by ``[secret]``, as Jupyter does.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import pytest

from tests.server.live import fetch, serve_process
from wkjupyter.server.redact import redact_uri

if TYPE_CHECKING:
    from pathlib import Path

    from tests.server.conftest import Served

#: Query parameters that carry credentials, each with a value to look for in the logs.
SECRETS = {
    "token": "tok3n-abc",
    "access_token": "acc3ss-tok",
    "KEY": "upper-k3y",
    "api_key": "api-k3y",
    "secret": "s3cret-val",
    "Password": "hunt3r2",
    "signature": "s1gn-val",
    "X-Amz-Credential": "AKIAEXAMPLE/20250101/us-east-1/s3/aws4_request",
    "X-Amz-Signature": "deadbeefcafe",
    "X-Amz-Security-Token": "sess10n-tok",
}
QUERY = urlencode({"format": "json", **SECRETS})


def leaked(lines: list[str]) -> list[str]:
    values = [v for value in SECRETS.values() for v in (value, urlencode({"v": value})[2:])]
    return [line for line in lines if any(v in line for v in values)]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/wkjupyter/api/datasets?token=abc", "/wkjupyter/api/datasets?token=[secret]"),
        ("/x?format=json&Token=a&b=1", "/x?format=json&Token=[secret]&b=1"),
        ("/x?X-Amz-Signature=ab&X-Amz-Date=1", "/x?X-Amz-Signature=[secret]&X-Amz-Date=[secret]"),
        ("/x?password=p;api_key=k", "/x?password=[secret];api_key=[secret]"),
        ("/x?access_token=", "/x?access_token=[secret]"),
        ("/x?format=json&layers=a", "/x?format=json&layers=a"),
        ("GET /x?secret=s (127.0.0.1)", "GET /x?secret=[secret] (127.0.0.1)"),
        ("uri='/x?token=abc', version", "uri='/x?token=[secret]', version"),
        ("/wkjupyter/links/abc/zarr/?sig=1", "/wkjupyter/links/<token>/zarr/?sig=[secret]"),
        ("https://user:pa55@host/x", "https://[secret]@host/x"),
    ],
)
def test_redact_uri(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected


def test_no_secret_query_parameter_reaches_the_log(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    token = served.hub.dataset("ome-zarr").create_link(label="logs").token
    caplog.set_level(logging.DEBUG, logger="tornado")
    caplog.set_level(logging.DEBUG, logger="wkjupyter")
    root = served.url.removesuffix("wkjupyter/")
    requests = [
        (served.url, "api/datasets", 403),  # tornado.general logs the refusal with the URL
        (served.url, "zarr/ome-zarr/.zgroup", 200),
        (served.url, "zarr/nope/.zgroup", 404),
        (served.url, "zarr/", 200),
        (served.url, "", 200),
        (served.url, f"links/{token}/zarr/.zattrs", 200),
        (served.url, "no/such/route", 404),  # tornado's own 404
        (root, "elsewhere", 404),
    ]
    for base, path, status in requests:
        assert fetch(base, f"{path}?{QUERY}").status == status, path
    logged = [r.getMessage() for r in caplog.records]
    assert leaked(logged) == []
    assert token not in "\n".join(logged)
    requests_logged = [line for line in logged if "token=[secret]" in line]
    assert len(requests_logged) >= len(requests), logged
    assert any(line.startswith("403 GET /wkjupyter/api/datasets?format=json&token=[secret]")
               for line in logged)  # fmt: skip


def test_the_launched_server_logs_no_jupyter_token(tmp_path: Path) -> None:
    """``wkjupyter serve`` as the launcher starts it: its stderr, for real."""
    env = {**os.environ, "WKJUPYTER_DATA_DIR": str(tmp_path)}
    env.pop("WKJUPYTER_CATALOG_URL", None)
    with serve_process("--token", "t0k", log=tmp_path / "serve.log", env=env) as served:
        assert served.url.endswith("/wkjupyter/"), served.stdout
        for path in ("api/datasets", "zarr/nope/.zgroup", "nowhere"):
            request = urllib.request.Request(f"{served.url}{path}?{QUERY}")
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(request, timeout=30)
    err = served.stderr
    lines = err.splitlines()
    assert leaked(lines) == []
    assert "t0k" not in err
    assert [line for line in lines if "GET /wkjupyter/api/datasets?format=json&token=[secret]&"
            in line], err  # fmt: skip

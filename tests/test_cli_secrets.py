"""Secrets reach the CLI without appearing in ``ps``: files, environment variables, prompts.

``--s3-secret``, ``--http-password``, ``--bearer-token`` and ``serve --token`` keep taking a
value (with a warning on stderr); ``-`` prompts on a terminal or reads a line of stdin,
``--<flag>-file PATH`` reads a file, and ``$WKJUPYTER_S3_SECRET`` / ``$WKJUPYTER_HTTP_PASSWORD``
/ ``$WKJUPYTER_TOKEN`` apply when the flag is absent. The HTTP tests explore a real server that
checks basic auth.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest

from tests.server.live import serve_process
from wkjupyter.cli import _credential, build_parser, main
from wkjupyter.demo import make_volume, write_demo
from wkjupyter.sources import HttpCredential, S3Credential

if TYPE_CHECKING:
    from pathlib import Path

    from tests.servers import HTTPServerFactory, RangeHTTPServer

USER, PASSWORD = "ann", "pässwort-ö1"
WARNING = "is visible to other users of this machine (ps)"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("secrets") / "demo"
    written = write_demo(root, make_volume((16, 32, 40), cells=5))
    return written["OME-Zarr 0.4"]


@pytest.fixture
def private(http_server: HTTPServerFactory, demo: Path) -> tuple[RangeHTTPServer, str]:
    """The demo OME-Zarr behind HTTP basic auth: (server, URL)."""
    server = http_server(demo.parent, basic_auth=(USER, PASSWORD))
    return server, server.url_for(demo.name)


def explore(url: str, *options: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["explore", url, "--http-user", USER, *options])
    return code, capsys.readouterr().err


def test_password_from_a_file(
    private: tuple[RangeHTTPServer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")  # the final newline is not part of it
    code, err = explore(private[1], "--http-password-file", str(secret), capsys=capsys)
    assert code == 0, err
    assert WARNING not in err
    secret.write_text("wrong\n")
    assert explore(private[1], "--http-password-file", str(secret), capsys=capsys)[0] == 1


def test_password_from_the_environment(
    private: tuple[RangeHTTPServer, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WKJUPYTER_HTTP_PASSWORD", PASSWORD)
    code, err = explore(private[1], capsys=capsys)
    assert code == 0, err
    assert WARNING not in err


def test_a_password_argument_still_works_with_a_warning(
    private: tuple[RangeHTTPServer, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = explore(private[1], "--http-password", PASSWORD, capsys=capsys)
    assert code == 0, err
    (warning,) = [line for line in err.splitlines() if WARNING in line]
    assert warning.startswith("warning: --http-password VALUE ")
    assert "--http-password-file PATH, $WKJUPYTER_HTTP_PASSWORD or --http-password -" in warning
    assert PASSWORD not in err


CLI = "import sys; from wkjupyter.cli import main; sys.exit(main())"


def run_cli(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", CLI, *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)


def test_dash_reads_the_password_from_stdin(private: tuple[RangeHTTPServer, str]) -> None:
    url = private[1]
    done = run_cli("explore", url, "--http-user", USER, "--http-password", "-",
                   stdin=PASSWORD + "\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert WARNING not in done.stderr
    refused = run_cli("explore", url, "--http-user", USER, "--http-password", "-", stdin="")
    assert refused.returncode == 1
    assert "reads the HTTP password from stdin, which is empty" in refused.stderr


def test_a_terminal_is_asked_for_the_password(private: tuple[RangeHTTPServer, str]) -> None:
    """On a real terminal (a pty): a prompt, no echo of what is typed, and it is used."""
    argv = [sys.executable, "-c", CLI, "explore", private[1], "--http-user", USER]
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.execv(sys.executable, argv)
    seen = b""
    try:
        seen = read_until(fd, b"HTTP password: ", seen)
        os.write(fd, PASSWORD.encode() + b"\n")
        seen = read_until(fd, None, seen)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = seen.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "HTTP password: " in text
    assert PASSWORD not in text  # not echoed
    assert "[ok] ome" in text  # the report: found with the password


def read_until(fd: int, wanted: bytes | None, seen: bytes, timeout: float = 60) -> bytes:
    """Read the pty until ``wanted`` shows (None: until the child closes it)."""
    deadline = time.monotonic() + timeout
    while wanted is None or wanted not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            pytest.fail(f"no {wanted!r} from the child: {seen!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child exited
            chunk = b""
        if not chunk:
            if wanted is None:
                break
            pytest.fail(f"the child ended without {wanted!r}: {seen!r}")
        seen += chunk
    return seen


def credential(*args: str) -> object:
    return _credential(build_parser().parse_args(["explore", "s3://bucket/x", *args]))


def test_s3_secret_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WKJUPYTER_S3_SECRET", raising=False)
    path = tmp_path / "s3-secret"
    path.write_text("from-file\n")
    assert credential("--s3-key-id", "AKIA1", "--s3-secret-file", str(path)) == S3Credential(
        "AKIA1", "from-file"
    )
    monkeypatch.setenv("WKJUPYTER_S3_SECRET", "from-env")
    assert credential("--s3-key-id", "AKIA1") == S3Credential("AKIA1", "from-env")
    assert credential("--s3-key-id", "AKIA1", "--s3-secret-file", str(path)) == S3Credential(
        "AKIA1", "from-file"
    )  # the file wins over the environment
    assert WARNING not in capsys.readouterr().err
    assert credential("--s3-key-id", "AKIA1", "--s3-secret", "argv") == S3Credential(
        "AKIA1", "argv"
    )
    assert "warning: --s3-secret VALUE" in capsys.readouterr().err


def test_s3_secret_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WKJUPYTER_S3_SECRET", raising=False)
    with pytest.raises(SystemExit, match=r"--s3-key-id needs its secret: --s3-secret-file PATH, "
                       r"\$WKJUPYTER_S3_SECRET or --s3-secret - \(prompt\)"):  # fmt: skip
        credential("--s3-key-id", "AKIA1")  # stdin is no terminal here: no prompt
    path = tmp_path / "empty"
    path.write_text("\n")
    with pytest.raises(SystemExit, match="is empty"):
        credential("--s3-key-id", "AKIA1", "--s3-secret-file", str(path))
    with pytest.raises(SystemExit, match="cannot read the S3 secret access key"):
        credential("--s3-key-id", "AKIA1", "--s3-secret-file", str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="give --s3-secret or --s3-secret-file, not both"):
        credential("--s3-key-id", "AKIA1", "--s3-secret", "x", "--s3-secret-file", str(path))


def test_bearer_token_from_a_file_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "token"
    path.write_text("tok\n")
    assert credential("--bearer-token-file", str(path)) == HttpCredential(token="tok")
    assert credential() is None
    assert WARNING not in capsys.readouterr().err


def test_serve_reads_its_token_from_a_file(tmp_path: Path) -> None:
    """The token from --token-file works for the REST API and is never printed."""
    token = "file-token-" + "x" * 20
    path = tmp_path / "token"
    path.write_text(token + "\n")
    env = {**os.environ, "WKJUPYTER_DATA_DIR": str(tmp_path)}
    for name in ("WKJUPYTER_CATALOG_URL", "WKJUPYTER_TOKEN"):
        env.pop(name, None)
    with serve_process("--token-file", str(path), log=tmp_path / "serve.log", env=env) as served:
        assert served.url.endswith("/wkjupyter/"), served.stdout

        def status(given: str) -> int:
            headers = {"Authorization": f"token {given}"}
            request = urllib.request.Request(f"{served.url}api/datasets", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    return int(answer.status)
            except urllib.error.HTTPError as err:
                return err.code

        assert status(token) == 200
        assert status("not-it") == 403
    assert token not in served.stdout + served.stderr
    assert "API token" not in served.stdout
    assert WARNING not in served.stderr


def test_serve_token_argument_warns(capsys: pytest.CaptureFixture[str]) -> None:
    from wkjupyter._cli_secrets import SERVE_TOKEN

    args = build_parser().parse_args(["serve", "--token", "t0k"])
    assert SERVE_TOKEN.value(args, prompt=False) == "t0k"
    err = capsys.readouterr().err
    assert "warning: --token VALUE" in err
    assert "--token-file PATH, $WKJUPYTER_TOKEN or --token -" in err
    assert "t0k" not in err

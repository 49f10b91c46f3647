"""Secrets on the command line without putting them in ``ps``.

A process's arguments are readable by every user of the machine (``ps``, ``/proc/<pid>/cmdline``)
and stay in shell history, so each secret option comes in four forms, tried in this order:
``--x VALUE`` (kept for scripts, with a warning on stderr), ``--x -`` (a prompt on a terminal,
else one line of stdin), ``--x-file PATH`` and an environment variable; when none is given and
the secret is needed, a terminal gets a prompt.
"""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

__all__ = ["BEARER_TOKEN", "HTTP_PASSWORD", "S3_SECRET", "SERVE_TOKEN", "SecretOption"]


@dataclass(frozen=True, slots=True)
class SecretOption:
    """A secret command-line option: ``flag`` and ``flag-file``, and ``env`` if not None."""

    flag: str
    what: str
    env: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def ways(self) -> str:
        """The safe ways to give the secret, for messages."""
        env = f", ${self.env}" if self.env else ""
        return f"{self.flag}-file PATH{env} or {self.flag} - (prompt)"

    def add_to(self, parser: argparse._ActionsContainer, text: str = "") -> None:
        """Add ``flag`` (VALUE or ``-``) and ``flag-file`` to ``parser``."""
        env = f"; default ${self.env}" if self.env else ""
        parser.add_argument(
            self.flag,
            metavar="-|VALUE",
            help=f"{text or 'the ' + self.what}: - prompts (or reads a line of stdin); a VALUE "
            f"is visible to other users in ps, prefer {self.flag}-file{env}",
        )
        parser.add_argument(
            f"{self.flag}-file", metavar="PATH", help=f"read the {self.what} from this file"
        )

    def value(self, args: argparse.Namespace, *, prompt: bool) -> str | None:
        """The secret given in ``args``, the environment, or (``prompt`` and on a terminal)
        typed at a prompt; None when there is none."""
        given: str | None = getattr(args, self.dest)
        path: str | None = getattr(args, f"{self.dest}_file")
        if given is not None and path is not None:
            msg = f"error: give {self.flag} or {self.flag}-file, not both"
            raise SystemExit(msg)
        if given == "-":
            return self._ask(always=True)
        if given is not None:
            print(
                f"warning: {self.flag} VALUE is visible to other users of this machine (ps) and "
                f"stays in your shell history; use {self.ways} instead",
                file=sys.stderr,
            )
            return given
        if path is not None:
            return self._read(Path(path))
        if self.env and os.environ.get(self.env):
            return os.environ[self.env]
        return self._ask(always=False) if prompt else None

    def _ask(self, *, always: bool) -> str | None:
        if sys.stdin.isatty():
            return getpass.getpass(f"{self.what}: ")
        if not always:
            return None
        line = sys.stdin.readline()  # piped in: `pass show s3 | wkjupyter ... --s3-secret -`
        if not line:
            msg = f"error: {self.flag} - reads the {self.what} from stdin, which is empty"
            raise SystemExit(msg)
        return line.rstrip("\r\n")

    def _read(self, path: Path) -> str:
        try:
            text = path.expanduser().read_text()
        except OSError as err:
            msg = f"error: cannot read the {self.what} from {self.flag}-file {path}: {err}"
            raise SystemExit(msg) from err
        secret = text.rstrip("\r\n")  # editors add a final newline
        if not secret:
            msg = f"error: {self.flag}-file {path} is empty"
            raise SystemExit(msg)
        return secret


S3_SECRET = SecretOption("--s3-secret", "S3 secret access key", "WKJUPYTER_S3_SECRET")
HTTP_PASSWORD = SecretOption("--http-password", "HTTP password", "WKJUPYTER_HTTP_PASSWORD")
#: No environment variable: a token in the environment would go to every URL explored.
BEARER_TOKEN = SecretOption("--bearer-token", "HTTP bearer token")
SERVE_TOKEN = SecretOption("--token", "API token", "WKJUPYTER_TOKEN")

"""The catalog's secrets: the Fernet key, encryption of stored secrets, and link tokens.

The key comes from ``$WKJUPYTER_SECRET_KEY`` when set, else from ``<data dir>/secret.key``,
which is created on first use, readable by its owner only. Either may hold several keys
(comma- or line-separated): the first encrypts, all decrypt (cryptography's ``MultiFernet``),
so a key is rotated by putting a new one in front and calling :func:`reencrypt_all`.

Link tokens are 256-bit random strings; the catalog keeps their SHA-256 (to find a link) and
a Fernet token of them (so their owner can copy the URL again), never the token itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select

from wkjupyter.catalog.models import CredentialRecord, LinkRecord
from wkjupyter.errors import SecretKeyError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.orm import Session

    from wkjupyter.catalog.core import Catalog

__all__ = [
    "ENV_KEY",
    "KEY_FILE",
    "SecretBox",
    "clear_cache",
    "new_token",
    "reencrypt_all",
    "secret_box",
    "token_hash",
]

ENV_KEY = "WKJUPYTER_SECRET_KEY"
KEY_FILE = "secret.key"
_GENERATE = (
    "generate one with: python -c "
    "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)


class SecretBox:
    """Encrypts and decrypts the catalog's secrets with its Fernet key(s).

    Parameters
    ----------
    keys
        Fernet keys; the first encrypts, every one of them decrypts.
    source
        Where the keys came from, for messages (``"$WKJUPYTER_SECRET_KEY"`` or a path).
    key_file
        The data dir's key file, named in the advice of a key mismatch.
    """

    __slots__ = ("_fernet", "key_file", "source")

    def __init__(self, keys: Sequence[bytes], *, source: str, key_file: Path | None = None) -> None:
        if not keys:
            msg = f"{source} holds no secret key; {_GENERATE}"
            raise SecretKeyError(msg)
        try:
            fernets = [Fernet(key) for key in keys]
        except (ValueError, TypeError):
            # Not chained: nothing about the key material should travel in a traceback.
            msg = (
                f"{source} is not a valid Fernet key (32 url-safe base64-encoded bytes); "
                f"{_GENERATE}"
            )
            raise SecretKeyError(msg) from None
        self._fernet = MultiFernet(fernets)
        self.source = source
        self.key_file = key_file

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SecretBox:
        """The box of ``$WKJUPYTER_SECRET_KEY``, else of ``<data_dir>/secret.key`` (created)."""
        key_file = Path(data_dir) / KEY_FILE
        env = os.environ.get(ENV_KEY, "").strip()
        if env:
            return cls(_split_keys(env), source=f"${ENV_KEY}", key_file=key_file)
        keys = _split_keys(_read_or_create_key_file(key_file))
        return cls(keys, source=str(key_file), key_file=key_file)

    def encrypt(self, data: bytes) -> bytes:
        """A Fernet token of ``data`` under the primary key."""
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        """The plaintext of a Fernet token made with any of the keys.

        Raises
        ------
        SecretKeyError
            The token was encrypted with another key (or is corrupt).
        """
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise SecretKeyError(self._mismatch()) from None

    def rotate(self, token: bytes) -> bytes:
        """``token`` re-encrypted under the primary key (it may have used an older one)."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise SecretKeyError(self._mismatch()) from None

    def _mismatch(self) -> str:
        where = self.key_file if self.key_file is not None else "the key file"
        return (
            "the catalog's secret key does not match the one these secrets were encrypted "
            f"with; restore {where} or {ENV_KEY} (the key in use comes from {self.source})"
        )

    def __repr__(self) -> str:
        return f"SecretBox(source={self.source!r})"


def _split_keys(text: str) -> list[bytes]:
    return [k.encode("ascii", "replace") for k in text.replace(",", "\n").split() if k]


def _read_or_create_key_file(path: Path) -> str:
    """The key file's text; a new key when there is no file yet."""
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Fernet.generate_key()
    # Written to a private temporary file, then hard-linked into place: the key file never
    # exists half-written, and of two processes racing here exactly one link succeeds.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: use its key
        except OSError:
            # No hard links on this file system: O_EXCL still lets only one creator win.
            _create_exclusive(path, key)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return _read_key_file(path)


def _create_exclusive(path: Path, key: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
        f.flush()
        os.fsync(f.fileno())


def _read_key_file(path: Path) -> str:
    with open(path, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if os.name == "posix" and mode & 0o077:
            msg = (
                f"the secret key file {path} is accessible by group or others "
                f"(mode {stat.filemode(mode)}); make it private with: chmod 600 {path}"
            )
            raise SecretKeyError(msg)
        text = f.read().decode("ascii", "replace")
    if not text.strip():
        msg = f"the secret key file {path} is empty; restore it from a backup or {_GENERATE}"
        raise SecretKeyError(msg)
    return text


_boxes: dict[tuple[Path, str], SecretBox] = {}
_boxes_lock = threading.Lock()


def secret_box(catalog: Catalog | Path) -> SecretBox:
    """The :class:`SecretBox` of a catalog (or data dir), made once per data dir and key.

    The environment is read on every call, so changing ``$WKJUPYTER_SECRET_KEY`` takes effect.
    """
    data_dir = Path(catalog if isinstance(catalog, Path | str) else catalog.data_dir)
    cache_key = (data_dir.resolve(), os.environ.get(ENV_KEY, "").strip())
    with _boxes_lock:
        box = _boxes.get(cache_key)
        if box is None:
            box = _boxes[cache_key] = SecretBox.for_data_dir(data_dir)
        return box


def clear_cache() -> None:
    """Forget the cached boxes (after a key file was replaced)."""
    with _boxes_lock:
        _boxes.clear()


def new_token() -> str:
    """A new link token: 256 random bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The SHA-256 of ``token`` as hex: how the catalog finds a link without storing its token.

    Any string hashes (lone surrogates from a mangled URL included), so malformed tokens take
    the same path as real ones.
    """
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def reencrypt_all(session: Session, box: SecretBox) -> int:
    """Re-encrypt every stored secret under the box's primary key; the number re-encrypted.

    After it, older keys may be dropped from ``$WKJUPYTER_SECRET_KEY`` or the key file.
    """
    count = 0
    for cred in session.scalars(select(CredentialRecord)):
        cred.secret = box.rotate(cred.secret)
        count += 1
    for link in session.scalars(select(LinkRecord)):
        link.token_secret = box.rotate(link.token_secret)
        count += 1
    session.flush()
    return count

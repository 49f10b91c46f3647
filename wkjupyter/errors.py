"""The exceptions wkjupyter raises.

Every error derives from :class:`WkJupyterError` and from the builtin a caller would
naturally catch (``KeyError``, ``PermissionError``, ``ValueError`` ...). Messages say what
failed, where (the URL) and what to do about it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CatalogNotFoundError",
    "CatalogReadOnlyError",
    "CatalogUnavailableError",
    "CatalogVersionError",
    "ConflictError",
    "CredentialNotFoundError",
    "DatasetNotFoundError",
    "HostUnreachableError",
    "InvalidExpiryError",
    "InvalidKeyError",
    "InvalidNameError",
    "LayerNotFoundError",
    "LinkNotFoundError",
    "MetadataError",
    "NothingFoundError",
    "PermissionDeniedError",
    "ReadTooLargeError",
    "RemoteAccessError",
    "RemoteNotFoundError",
    "RemoteUnavailableError",
    "SecretKeyError",
    "ServerNotFoundError",
    "SourceGoneError",
    "TeamNotFoundError",
    "UnsupportedFormatError",
    "UpstreamBusyError",
    "UserNotFoundError",
    "WkJupyterError",
]


class WkJupyterError(Exception):
    """Base class of every error wkjupyter raises."""


class _KeyErrorMessage(KeyError):
    # KeyError.__str__ repr()s its argument, which turns a sentence into a quoted string.
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DatasetNotFoundError(WkJupyterError, _KeyErrorMessage):
    """No dataset of that name is visible to the acting user."""


class LayerNotFoundError(WkJupyterError, _KeyErrorMessage):
    """The dataset has no layer (or mag) of that name."""


class InvalidKeyError(WkJupyterError, _KeyErrorMessage):
    """A storage key or URL path is malformed or tries to leave its root."""


class RemoteNotFoundError(WkJupyterError, FileNotFoundError):
    """The remote object does not exist (HTTP 404, missing file or key)."""


class RemoteAccessError(WkJupyterError, PermissionError):
    """The remote storage refused access (HTTP 401/403, bad or missing credentials)."""


class RemoteUnavailableError(WkJupyterError, ConnectionError):
    """The remote storage could not be reached or failed (timeout, DNS, 5xx)."""


class OutsideLocalRootsError(RemoteAccessError):
    """A local read would open a path outside ``AccessOptions.local_roots``: nothing was
    read. The message names the path as asked for, never what it resolves to, so it reads
    the same whether or not something exists there."""


class HostUnreachableError(RemoteUnavailableError):
    """The host did not answer at all (DNS failure, connection refused, no route)."""


class UpstreamBusyError(RemoteUnavailableError):
    """Too many requests already wait for this upstream host (or bucket): refused at once.

    ``retry_after`` is when a waiting place should be free again, in whole seconds.
    """

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceGoneError(RemoteNotFoundError):
    """The storage location itself is gone (a deleted bucket, the array metadata removed).

    Unlike its base class it never means "not stored": a missing chunk of a source that is
    gone must not be read as the fill value.
    """


class NothingFoundError(WkJupyterError, ValueError):
    """Exploring found no dataset at the URLs given.

    ``report`` is the :class:`~wkjupyter.ExploreReport` with every attempt.
    """

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class ReadTooLargeError(WkJupyterError, ValueError):
    """A read would need more memory than the read limit allows (``AccessOptions``)."""


class PermissionDeniedError(WkJupyterError, PermissionError):
    """The acting user lacks the right to do this."""


class MetadataError(WkJupyterError, ValueError):
    """Metadata was found but is malformed or inconsistent."""


class UnsupportedFormatError(WkJupyterError, ValueError):
    """The data is in a format, data type, codec or encoding wkjupyter cannot read."""


class ConflictError(WkJupyterError, ValueError):
    """The name is taken or the object is in use: the change would conflict with what is stored."""


class CredentialNotFoundError(WkJupyterError, _KeyErrorMessage):
    """No stored credential of that name or id is visible to the acting user."""


class InvalidExpiryError(WkJupyterError, ValueError):
    """A link expiry is malformed, not positive or in the past."""


class LinkNotFoundError(WkJupyterError, _KeyErrorMessage):
    """No link with that id is visible to the acting user."""


class SecretKeyError(WkJupyterError, ValueError):
    """The catalog's secret key is missing, malformed, readable by others or not the one the
    stored secrets were encrypted with."""


class ServerNotFoundError(WkJupyterError, LookupError):
    """No wkjupyter server is known to build a URL with (no public URL was found or given)."""


class InvalidNameError(WkJupyterError, ValueError):
    """A dataset, tag, user or team name is empty, too long or has characters not allowed."""


class UserNotFoundError(WkJupyterError, _KeyErrorMessage):
    """No user of that name (or the user is not a member of that team)."""


class TeamNotFoundError(WkJupyterError, _KeyErrorMessage):
    """No team of that name."""


class CatalogVersionError(WkJupyterError, RuntimeError):
    """The catalog database has a schema this wkjupyter cannot use (made by a newer version)."""


class CatalogUnavailableError(WkJupyterError, ConnectionError):
    """The catalog database cannot be reached, or stayed locked or busy through every retry."""

    reason = "the catalog is busy; try again"
    """What the data routes answer (anonymous clients see no URL or path)."""


class CatalogNotFoundError(CatalogUnavailableError):
    """The catalog database does not exist: a named catalog that was never created, or a
    SQLite file moved or deleted (a running server answers 503 until it is back)."""

    reason = "catalog file missing"


class CatalogReadOnlyError(CatalogUnavailableError):
    """The catalog database refuses writes (a read-only file, role or transaction)."""

    reason = "catalog is read-only"

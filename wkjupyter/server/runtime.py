"""Where the wkjupyter server is: the contract between the server extension and kernels.

The extension (the writer) records its public URL and catalog in
``<jupyter runtime dir>/wkjupyter-server-<pid>.json`` while it runs. A kernel (the reader)
knows its server's pid from ``$JPY_PARENT_PID`` (set by jupyter_client's launcher on POSIX)
and reads that file, so ``Hub`` builds links and Zarr URLs that work without configuration.

Kernels import this module, so it imports only the standard library, jupyter_core and
:mod:`wkjupyter.errors` (jupyter_server, which is heavy, only inside
:func:`running_server_url`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from jupyter_core.paths import jupyter_runtime_dir

from wkjupyter.errors import MetadataError

__all__ = [
    "ServerInfo",
    "discover_catalog_url",
    "discover_data_dir",
    "discover_public_url",
    "info_path",
    "jupyterhub_url",
    "read_server_info",
    "remove_server_info",
    "running_server_url",
    "server_public_url",
    "write_server_info",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What a running wkjupyter server extension tells the kernels it starts.

    Attributes
    ----------
    pid
        The server's process id.
    url
        The server's public base URL including its ``base_url``, e.g.
        ``"http://localhost:8888/"`` or ``"https://hub.example.org/user/alice/"``; a
        trailing "/" is added when missing.
    catalog_url
        The catalog URL the extension was configured with; ``None`` for the default.
    data_dir
        The extension's data directory; ``None`` for the default.
    """

    pid: int
    url: str
    catalog_url: str | None = None
    data_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", _with_slash(self.url))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServerInfo:
        """Parse :meth:`to_json` output; :class:`MetadataError` when malformed."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            msg = f"not JSON: {err}"
            raise MetadataError(msg) from err
        if not isinstance(d, dict):
            msg = f"expected a JSON object, got {type(d).__name__}"
            raise MetadataError(msg)
        pid, url = d.get("pid"), d.get("url")
        optional = {k: d.get(k) for k in ("catalog_url", "data_dir")}
        if not (isinstance(pid, int) and not isinstance(pid, bool) and pid > 0):
            msg = f"'pid' must be a positive integer, got {pid!r}"
            raise MetadataError(msg)
        if not (isinstance(url, str) and url):
            msg = f"'url' must be a non-empty string, got {url!r}"
            raise MetadataError(msg)
        for key, value in optional.items():
            if value is not None and not isinstance(value, str):
                msg = f"{key!r} must be a string or null, got {value!r}"
                raise MetadataError(msg)
        return cls(pid, url, optional["catalog_url"], optional["data_dir"])


def info_path(pid: int) -> Path:
    """The server info file of the server with process id ``pid``."""
    return Path(jupyter_runtime_dir()) / f"wkjupyter-server-{pid}.json"


def write_server_info(info: ServerInfo) -> Path:
    """Write ``info`` atomically (readers never see half a file), readable by its owner only."""
    path = info_path(info.pid)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(info.to_json())
        os.chmod(tmp, 0o600)  # mkstemp's default, stated: the file names the catalog
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def remove_server_info(pid: int) -> None:
    """Remove the server info file of ``pid``; a missing file is fine."""
    with contextlib.suppress(FileNotFoundError):
        info_path(pid).unlink()


def read_server_info(pid: int | None = None) -> ServerInfo | None:
    """The info of the running wkjupyter server ``pid`` (default: this kernel's server).

    Returns ``None`` when the pid is unknown (no integer ``$JPY_PARENT_PID``), the file is
    missing or malformed (logged as a warning) or the process is gone.
    """
    if pid is None and (pid := _parent_pid()) is None:
        return None
    path = info_path(pid)
    try:
        info = ServerInfo.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, MetadataError) as err:
        _log.warning("ignoring the wkjupyter server info file %s: %s", path, err)
        return None
    if info.pid != pid:
        _log.warning("ignoring the wkjupyter server info file %s: it names pid %d", path, info.pid)
        return None
    return info if _alive(pid) else None


def jupyterhub_url() -> str | None:
    """This single-user server's public URL under JupyterHub, from the spawner's environment.

    ``$JUPYTERHUB_PUBLIC_URL`` (JupyterHub >= 5, empty unless the hub's ``public_url`` is
    set) is the server's own public URL; its path is replaced by
    ``$JUPYTERHUB_SERVICE_PREFIX`` (``/user/alice/``) when known, so a bare host works too.
    ``None`` without a public URL: the prefix alone is a relative URL, useless to external
    viewers (:func:`discover_public_url` then asks the running server).
    """
    public = os.environ.get("JUPYTERHUB_PUBLIC_URL", "").strip()
    if not public:
        return None
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "").strip()
    return _with_slash(urljoin(public, "/" + prefix.lstrip("/")) if prefix else public)


def running_server_url(pid: int | None = None) -> str | None:
    """The URL (with its ``base_url``) of the running Jupyter server ``pid``.

    Read from jupyter_server's ``jpserver-<pid>.json`` runtime files; ``pid`` defaults to
    ``$JPY_PARENT_PID``. ``None`` when no such server runs or it listens on a Unix socket.
    """
    if pid is None and (pid := _parent_pid()) is None:
        return None
    from jupyter_server.serverapp import list_running_servers  # heavy: only when needed

    try:
        for info in list_running_servers():
            url = info.get("url")
            if info.get("pid") == pid and isinstance(url, str):
                scheme = urlsplit(url).scheme
                return _with_slash(url) if scheme in ("http", "https") else None
    except (OSError, ValueError) as err:  # an unreadable runtime file
        _log.warning("cannot list the running Jupyter servers: %s", err)
    return None


def discover_public_url(explicit: str | None = None) -> str | None:
    """The wkjupyter server's public base URL, ending in "/"; ``None`` when unknown.

    First found of: ``explicit``; ``$WKJUPYTER_PUBLIC_URL``; the URL this kernel's wkjupyter
    server recorded (:func:`read_server_info`); :func:`jupyterhub_url`;
    :func:`running_server_url`.
    """
    for given in (explicit, os.environ.get("WKJUPYTER_PUBLIC_URL")):
        if given and given.strip():
            return _with_slash(given.strip())
    info = read_server_info()
    if info is not None:
        return info.url
    return jupyterhub_url() or running_server_url()


def discover_catalog_url(explicit: str | None = None) -> str | None:
    """The catalog URL to use; ``None`` for the default SQLite catalog.

    First found of: ``explicit``; ``$WKJUPYTER_CATALOG_URL``; the catalog this kernel's
    wkjupyter server was configured with (:func:`read_server_info`).
    """
    for given in (explicit, os.environ.get("WKJUPYTER_CATALOG_URL")):
        if given:
            return given
    info = read_server_info()
    return info.catalog_url if info is not None else None


def discover_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The data directory to use; ``None`` for the default.

    First found of: ``explicit``; ``$WKJUPYTER_DATA_DIR``; the data directory of this
    kernel's wkjupyter server. It goes with :func:`discover_catalog_url`: the default
    catalog and the secret key that encrypts the catalog's secrets live there.
    """
    if explicit is not None:
        return Path(explicit)
    if env := os.environ.get("WKJUPYTER_DATA_DIR"):
        return Path(env).expanduser()  # as wkjupyter.paths.data_dir reads it
    info = read_server_info()
    return Path(info.data_dir) if info is not None and info.data_dir else None


def server_public_url(configured: str | None, connection_url: str) -> str:
    """The public URL the server extension records, ending in "/".

    Parameters
    ----------
    configured
        The extension's configured public URL (the full URL including ``base_url``), if any.
    connection_url
        ``ServerApp.connection_url``, which includes ``base_url``: the fallback when neither
        the configuration nor JupyterHub names a public URL.
    """
    if configured and configured.strip():
        return _with_slash(configured.strip())
    return jupyterhub_url() or _with_slash(connection_url)


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _parent_pid() -> int | None:
    try:
        pid = int(os.environ.get("JPY_PARENT_PID", ""))
    except ValueError:
        return None
    return pid if pid > 0 else None


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True

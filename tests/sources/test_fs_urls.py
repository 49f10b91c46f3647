"""Pure parts of storage access: URL parsing, key joining, error mapping."""

from __future__ import annotations

import asyncio
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wkjupyter.errors import (
    InvalidKeyError,
    RemoteAccessError,
    RemoteNotFoundError,
    RemoteUnavailableError,
)
from wkjupyter.sources._fs import (
    GcsCredential,
    HttpCredential,
    S3Credential,
    Store,
    join_url,
    parse_url,
    translate_error,
)


@pytest.mark.parametrize(
    ("url", "scheme", "root", "endpoint"),
    [
        ("/data/x.zarr/", "file", "/data/x.zarr", None),
        ("file:///data/a%20b.n5", "file", "/data/a b.n5", None),
        ("https://h.org/d/x.zarr/", "https", "https://h.org/d/x.zarr", None),
        ("s3://bucket/key/x.zarr", "s3", "bucket/key/x.zarr", None),
        ("s3://localhost:9000/bucket/key", "s3", "bucket/key", "http://localhost:9000"),
        ("s3://minio.lab.org:9000/b/k", "s3", "b/k", "https://minio.lab.org:9000"),
        ("gs://bucket/p/seg", "gs", "bucket/p/seg", None),
        ("gcs://bucket/p", "gs", "bucket/p", None),
    ],
)
def test_parse_url(url: str, scheme: str, root: str, endpoint: str | None) -> None:
    parsed = parse_url(url)
    assert (parsed.scheme, parsed.root, parsed.endpoint_url) == (scheme, root, endpoint)


@pytest.mark.parametrize(
    "url", ["https://u:pw-9x@h.org/x.zarr", "http://u@h.org/x", "https://:pw-9x@h.org/x"]
)
def test_user_info_is_refused_with_how_to_give_a_credential(url: str) -> None:
    # Read with it, then imported without it: the password was silently dropped.
    with pytest.raises(ValueError, match=r"HttpCredential\(username, password\)") as info:
        parse_url(url)
    assert '"kind": "http"' in str(info.value)
    assert "pw-9x" not in str(info.value)


def test_unsupported_scheme_says_what_works() -> None:
    with pytest.raises(ValueError, match=r"ftp.*use a local path, file://, http\(s\)://"):
        parse_url("ftp://host/x")


@pytest.mark.parametrize(
    ("base", "key", "joined"),
    [
        ("https://h/a/b", "c/d", "https://h/a/b/c/d"),
        ("https://h/a/b/", "./c", "https://h/a/b/c"),
        ("https://h/a/b", "../c", "https://h/a/c"),
        ("gs://bucket/a", "../b/info", "gs://bucket/b/info"),
        ("/data/x", "y/../z", "/data/x/z"),
        ("https://h/a", "s3://other/x", "s3://other/x"),
    ],
)
def test_join_url(base: str, key: str, joined: str) -> None:
    assert join_url(base, key) == joined


@pytest.mark.parametrize(("base", "key"), [("gs://bucket", "../x"), ("https://h", "../../x")])
def test_join_url_cannot_climb_above_the_root(base: str, key: str) -> None:
    with pytest.raises(InvalidKeyError, match="climbs above"):
        join_url(base, key)


@given(
    st.lists(
        st.from_regex(r"[a-z0-9_.-]{1,8}", fullmatch=True).filter(lambda s: s not in (".", "..")),
        min_size=1,
        max_size=5,
    )
)
def test_join_then_parent_is_identity(segments: list[str]) -> None:
    base = "https://h/root"
    joined = join_url(base, "/".join(segments))
    assert join_url(joined, "/".join([".."] * len(segments))) == base


class _Status(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@pytest.mark.parametrize(
    ("err", "kind", "text"),
    [
        (FileNotFoundError("x"), RemoteNotFoundError, "does not exist"),
        (_Status(404), RemoteNotFoundError, "does not exist"),
        (_Status(401), RemoteAccessError, "check the credential"),
        (_Status(403), RemoteAccessError, "refused"),
        (PermissionError("AccessDenied"), RemoteAccessError, "refused"),
        (TimeoutError(), RemoteUnavailableError, "timed out"),
        (TimeoutError(), RemoteUnavailableError, "WKJUPYTER_TIMEOUT"),
        (_Status(503), RemoteUnavailableError, "try again later"),
        (ConnectionRefusedError("refused"), RemoteUnavailableError, "cannot reach"),
    ],
)
def test_errors_map_to_ours_and_name_the_url(err: Exception, kind: type, text: str) -> None:
    mapped = translate_error(err, "https://h/x/.zattrs")
    assert isinstance(mapped, kind)
    assert "'https://h/x/.zattrs'" in str(mapped)
    assert text in str(mapped)


def test_credentials_never_show_their_secret() -> None:
    creds = [
        HttpCredential("alice", "hunter2-secret"),
        HttpCredential(token="tok-secret"),
        S3Credential("AKIAKEY", "s3-secret", endpoint_url="http://localhost:9000"),
        GcsCredential('{"private_key": "gcs-secret"}'),
    ]
    for cred in creds:
        assert "secret" not in repr(cred)
        assert "secret" not in repr(
            Store(
                "s3://b/x"
                if isinstance(cred, S3Credential)
                else "gs://b/x"
                if isinstance(cred, GcsCredential)
                else "https://h/x",
                cred,
            )
        )


def test_credential_must_fit_the_scheme() -> None:
    with pytest.raises(TypeError, match="S3Credential cannot be used for 'https://h/x'"):
        Store("https://h/x", S3Credential("k", "s"))


def test_store_pickles() -> None:
    store = Store("s3://bucket/x", S3Credential("k", "s", "http://localhost:1"))
    again = pickle.loads(pickle.dumps(store))
    assert again == store
    assert again.credential == store.credential


def test_keys_are_validated() -> None:
    store = Store("/tmp")
    with pytest.raises(InvalidKeyError):
        asyncio.run(store.get("/etc/passwd"))

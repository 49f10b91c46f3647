"""The catalog's secret key, the SecretBox, and link tokens."""

from __future__ import annotations

import hashlib
import os
import stat
import threading

import pytest
from cryptography.fernet import Fernet

from wkjupyter.catalog.crypto import (
    ENV_KEY,
    KEY_FILE,
    SecretBox,
    new_token,
    secret_box,
    token_hash,
)
from wkjupyter.errors import SecretKeyError, WkJupyterError


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_key_file_created_private_and_reused(tmp_path):
    data_dir = tmp_path / "new" / "dir"
    box = SecretBox.for_data_dir(data_dir)
    key_file = data_dir / KEY_FILE
    assert _mode(key_file) == 0o600
    assert box.source == str(key_file)
    token = box.encrypt(b"hello")
    again = SecretBox.for_data_dir(data_dir)
    assert again.decrypt(token) == b"hello"
    Fernet(key_file.read_bytes().strip())  # a plain Fernet key, one line
    assert [p.name for p in data_dir.iterdir()] == [KEY_FILE]  # no temporary left behind


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_key_file_private_even_with_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        SecretBox.for_data_dir(tmp_path)
    finally:
        os.umask(old)
    assert _mode(tmp_path / KEY_FILE) == 0o600


def test_racing_creators_agree_on_one_key(tmp_path):
    boxes: list[SecretBox] = []
    barrier = threading.Barrier(8)

    def create():
        barrier.wait()
        boxes.append(SecretBox.for_data_dir(tmp_path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    token = boxes[0].encrypt(b"x")
    assert all(b.decrypt(token) == b"x" for b in boxes)
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o620])
def test_key_file_readable_by_others_refused(tmp_path, mode):
    key_file = tmp_path / KEY_FILE
    key_file.write_bytes(Fernet.generate_key())
    key_file.chmod(mode)
    with pytest.raises(SecretKeyError, match="chmod 600") as info:
        SecretBox.for_data_dir(tmp_path)
    assert str(key_file) in str(info.value)
    assert key_file.read_bytes().decode() not in str(info.value)


def test_empty_or_malformed_key_file(tmp_path):
    key_file = tmp_path / KEY_FILE
    key_file.touch(mode=0o600)
    with pytest.raises(SecretKeyError, match="empty"):
        SecretBox.for_data_dir(tmp_path)
    key_file.write_text("not-a-fernet-key-at-all\n")
    with pytest.raises(SecretKeyError, match="not a valid Fernet key") as info:
        SecretBox.for_data_dir(tmp_path)
    assert "not-a-fernet-key-at-all" not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_env_key_wins(tmp_path, monkeypatch):
    key = Fernet.generate_key()
    monkeypatch.setenv(ENV_KEY, key.decode())
    box = secret_box(tmp_path)
    assert not (tmp_path / KEY_FILE).exists()  # never created when the env gives the key
    assert box.source == f"${ENV_KEY}"
    assert Fernet(key).decrypt(box.encrypt(b"data")) == b"data"
    assert key.decode() not in repr(box)
    assert key.decode() not in str(box)


def test_env_key_wins_over_existing_file(tmp_path, monkeypatch):
    file_box = SecretBox.for_data_dir(tmp_path)
    token = file_box.encrypt(b"data")
    monkeypatch.setenv(ENV_KEY, Fernet.generate_key().decode())
    with pytest.raises(SecretKeyError):
        secret_box(tmp_path).decrypt(token)


def test_invalid_env_key(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_KEY, "sekrit-but-not-fernet")
    with pytest.raises(SecretKeyError, match=r"\$WKJUPYTER_SECRET_KEY is not a valid") as info:
        secret_box(tmp_path)
    assert "sekrit-but-not-fernet" not in str(info.value)


def test_wrong_key_says_what_to_restore(tmp_path):
    token = SecretBox([Fernet.generate_key()], source="elsewhere").encrypt(b"secret")
    box = SecretBox.for_data_dir(tmp_path)
    with pytest.raises(SecretKeyError) as info:
        box.decrypt(token)
    message = str(info.value)
    assert "does not match the one these secrets were encrypted with" in message
    assert str(tmp_path / KEY_FILE) in message
    assert ENV_KEY in message
    assert isinstance(info.value, WkJupyterError)
    assert info.value.__cause__ is None
    with pytest.raises(SecretKeyError):
        box.decrypt(b"garbage")


def test_multiple_keys_rotate(tmp_path, monkeypatch):
    old, new = Fernet.generate_key(), Fernet.generate_key()
    old_token = SecretBox([old], source="old").encrypt(b"payload")
    monkeypatch.setenv(ENV_KEY, f"{new.decode()}, {old.decode()}")
    box = secret_box(tmp_path)
    assert box.decrypt(old_token) == b"payload"
    rotated = box.rotate(old_token)
    assert Fernet(new).decrypt(rotated) == b"payload"
    assert Fernet(new).decrypt(box.encrypt(b"n")) == b"n"  # the first key encrypts


def test_secret_box_cached_per_data_dir_and_key(tmp_path, monkeypatch):
    a = tmp_path / "a"
    assert secret_box(a) is secret_box(a)
    assert secret_box(a) is not secret_box(tmp_path / "b")
    monkeypatch.setenv(ENV_KEY, Fernet.generate_key().decode())
    assert secret_box(a).source == f"${ENV_KEY}"


def test_tokens_are_256_bit_and_unique():
    tokens = {new_token() for _ in range(10_000)}
    assert len(tokens) == 10_000
    for token in list(tokens)[:100]:
        assert len(token) == 43  # 32 bytes, url-safe base64 without padding
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_token_hash():
    assert token_hash("abc") == hashlib.sha256(b"abc").hexdigest()
    assert len(token_hash("")) == 64
    assert len(token_hash("\ud800 lone surrogate")) == 64  # mangled URLs still hash

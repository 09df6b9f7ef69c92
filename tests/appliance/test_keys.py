"""Key ring: private files, rotation, HKDF subkeys and authenticated sealing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

import pytest

from appliance.keys import PURPOSES, KeyRing, KeyRingError, UnsealError
from policies.keying import EngineKeys


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def hkdf_sha256(secret: bytes, info: bytes) -> bytes:
    """RFC 5869 written out, to check the ring derives what its docstring promises."""
    prk = hmac.new(b"\x00" * 32, secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


@pytest.fixture
def ring_path(tmp_path: Path) -> Path:
    return tmp_path / "node" / "keys" / "keyring.json"


def test_create_writes_a_private_file_in_private_folders(ring_path: Path) -> None:
    ring = KeyRing.create(ring_path)
    assert mode(ring_path) == 0o600
    assert mode(ring_path.parent) == 0o700 and mode(ring_path.parent.parent) == 0o700
    data = json.loads(ring_path.read_text())
    assert [k["key_id"] for k in data["keys"]] == [ring.active_key_id]
    key = data["keys"][0]
    int(key["key_id"], 16)  # short random hex
    assert len(base64.b64decode(key["secret"])) == 32
    assert key["created"].endswith("Z")
    assert list(ring_path.parent.iterdir()) == [ring_path]  # no temporary file left behind


def test_create_refuses_to_overwrite(ring_path: Path) -> None:
    KeyRing.create(ring_path)
    before = ring_path.read_bytes()
    with pytest.raises(KeyRingError, match="already exists and is never overwritten"):
        KeyRing.create(ring_path)
    assert ring_path.read_bytes() == before


def test_load_gives_the_same_keys(ring_path: Path) -> None:
    ring = KeyRing.create(ring_path)
    again = KeyRing.load(ring_path)
    assert again.active_key_id == ring.active_key_id
    for purpose in PURPOSES:
        assert again.subkey(purpose) == ring.subkey(purpose)


@pytest.mark.parametrize("unsafe", [0o644, 0o640, 0o604, 0o660])
def test_load_refuses_files_others_can_read(ring_path: Path, unsafe: int) -> None:
    KeyRing.create(ring_path)
    os.chmod(ring_path, unsafe)
    with pytest.raises(KeyRingError) as info:
        KeyRing.load(ring_path)
    assert f"mode {unsafe:04o}" in str(info.value)
    assert f"chmod 600 {ring_path}" in str(info.value)


def test_load_of_a_missing_or_damaged_file_says_what_to_do(ring_path: Path) -> None:
    with pytest.raises(KeyRingError, match=r"does not exist.*tce init"):
        KeyRing.load(ring_path)
    KeyRing.create(ring_path)
    data = json.loads(ring_path.read_text())
    data["keys"][0]["secret"] = base64.b64encode(b"short").decode()
    ring_path.write_text(json.dumps(data))
    with pytest.raises(KeyRingError, match=r"not a valid tce-keyring file.*backup"):
        KeyRing.load(ring_path)


def test_subkeys_are_hkdf_of_the_master(ring_path: Path) -> None:
    ring = KeyRing.create(ring_path)
    secret = base64.b64decode(json.loads(ring_path.read_text())["keys"][0]["secret"])
    for purpose in PURPOSES:
        expected = hkdf_sha256(secret, f"tce-appliance/{purpose}/v1".encode())
        assert ring.subkey(purpose) == expected


def test_subkeys_differ_across_purposes_and_rings(tmp_path: Path) -> None:
    one = KeyRing.create(tmp_path / "a" / "keyring.json")
    two = KeyRing.create(tmp_path / "b" / "keyring.json")
    mine = [one.subkey(p) for p in PURPOSES]
    assert len(set(mine)) == len(PURPOSES)
    assert all(len(k) == 32 for k in mine)
    assert not set(mine) & {two.subkey(p) for p in PURPOSES}
    with pytest.raises(ValueError, match="unknown key purpose"):
        one.subkey("signing")


def test_engine_keys_are_the_subkeys_of_the_active_key(ring_path: Path) -> None:
    ring = KeyRing.create(ring_path)
    keys = ring.engine_keys()
    assert isinstance(keys, EngineKeys)
    assert keys == EngineKeys(uid=ring.subkey("uid"), pseudonym=ring.subkey("pseudonym"),
                              date=ring.subkey("date"), key_id=ring.active_key_id)


def test_rotate_adds_an_active_key_and_old_tokens_still_unseal(ring_path: Path) -> None:
    ring = KeyRing.create(ring_path)
    first = ring.active_key_id
    old_uid_key = ring.subkey("uid")
    token = ring.seal(b"1.2.840.99999.1", b"study:2.25.1")

    new = ring.rotate()
    assert new != first and ring.active_key_id == new and ring.key_ids == [first, new]
    assert mode(ring_path) == 0o600
    assert sorted(p.name for p in ring_path.parent.iterdir()) == ["keyring.json"]

    reloaded = KeyRing.load(ring_path)
    assert reloaded.key_ids == [first, new]
    assert reloaded.subkey("uid") != old_uid_key
    assert reloaded.subkey("uid", first) == old_uid_key
    assert reloaded.unseal(token, b"study:2.25.1") == b"1.2.840.99999.1"
    assert reloaded.seal(b"x", b"c")[5:5 + len(new)] == new.encode()


def test_seal_is_authenticated_and_bound_to_its_context(ring_path: Path) -> None:
    ring = KeyRing.create(ring_path)
    plaintext = b"DOE^JANE|12345678"
    token = ring.seal(plaintext, b"instance:2.25.7")
    assert plaintext not in token
    assert ring.seal(plaintext, b"instance:2.25.7") != token  # fresh nonce each time
    assert ring.unseal(token, b"instance:2.25.7") == plaintext

    with pytest.raises(UnsealError, match="altered or belongs to another context"):
        ring.unseal(token, b"instance:2.25.8")
    for position in (len(token) - 1, len(token) - 20, 5 + len(ring.active_key_id) + 2):
        tampered = bytearray(token)
        tampered[position] ^= 0x01
        with pytest.raises(UnsealError):
            ring.unseal(bytes(tampered), b"instance:2.25.7")
    with pytest.raises(UnsealError, match="wrong prefix"):
        ring.unseal(b"garbage", b"instance:2.25.7")


def test_a_token_from_another_ring_does_not_unseal(tmp_path: Path) -> None:
    one = KeyRing.create(tmp_path / "a" / "keyring.json")
    two = KeyRing.create(tmp_path / "b" / "keyring.json")
    with pytest.raises(UnsealError, match="does not hold"):
        two.unseal(one.seal(b"secret", b"ctx"), b"ctx")


def test_repr_never_shows_secrets(ring_path: Path) -> None:
    ring = KeyRing.create(ring_path)
    secret = json.loads(ring_path.read_text())["keys"][0]["secret"]
    assert secret not in repr(ring) and secret not in repr(ring._keys)

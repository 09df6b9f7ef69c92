"""The key ring: master secrets behind pseudonyms, remapped UIDs, date shifts and sealed originals.

Whoever holds a node's key ring can recompute its pseudonyms and unseal what it sealed, so:

* the file is JSON with mode 0600 and is refused when group or others can access it;
* stage 1 and stage 2 never share a key ring in production: stage 2 must not be able to
  re-identify what stage 1 pseudonymized (``tce init`` creates one ring per node);
* the engine never sees this file: :meth:`KeyRing.engine_keys` hands it derived bytes only.

The newest key is the active one. :meth:`KeyRing.rotate` adds a new active key and keeps the old
ones, so tokens sealed earlier can still be unsealed. Rotation changes every derived value, so
pseudonyms made after a rotation do not match those made before it; rotate deliberately.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from appliance.durable import fsync_dir
from appliance.settings import ConfigError
from policies.keying import EngineKeys

PURPOSES = ("uid", "pseudonym", "date", "seal")
FORMAT = "tce-keyring"
FORMAT_VERSION = 1
SECRET_BYTES = 32
_NONCE_BYTES = 12
_TOKEN_MAGIC = b"TCE1"


class KeyRingError(ConfigError):
    """The key ring file is missing, unsafe or malformed; the message says which and what to do."""


class UnsealError(ValueError):
    """A sealed token was altered, sealed for another context, or sealed by an unknown key."""


@dataclass(frozen=True)
class _Key:
    key_id: str
    created: str
    secret: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"_Key(key_id={self.key_id!r}, created={self.created!r})"


class KeyRing:
    """Master secrets of one node, oldest first; the last one is active."""

    def __init__(self, path: Path, keys: list[_Key]) -> None:
        if not keys:
            raise KeyRingError(f"key ring {path} holds no keys")
        self.path = path
        self._keys = list(keys)

    def __repr__(self) -> str:
        return f"KeyRing(path={str(self.path)!r}, key_ids={self.key_ids!r})"

    # --- files --------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path) -> KeyRing:
        """Make a new ring with one key; refuses to replace an existing file."""
        path = Path(path)
        if path.exists() or path.is_symlink():
            raise KeyRingError(
                f"key ring {path} already exists and is never overwritten: it holds the secrets"
                " behind every pseudonym and sealed original. Use it, or move it away yourself")
        ring = cls(path, [_new_key(set())])
        _ensure_parent(path)
        ring._write(replace_existing=False)
        return ring

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """Read a ring, refusing files that group or others can access."""
        path = Path(path)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise KeyRingError(f"key ring {path} does not exist: check the key_ring setting,"
                               " or run 'tce init DIR' to create one") from None
        if mode & 0o077:
            raise KeyRingError(
                f"key ring {path} has mode {stat.S_IMODE(mode):04o}, so other users may read"
                f" its secrets; make it private with 'chmod 600 {path}' and check who copied it")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            keys = [_parse_key(entry) for entry in data["keys"]]
            if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
                raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
        except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise KeyRingError(f"key ring {path} is not a valid {FORMAT} file ({exc}); restore"
                               " it from your backup") from None
        ids = [k.key_id for k in keys]
        if len(set(ids)) != len(ids):
            raise KeyRingError(f"key ring {path} lists a key id twice; restore it from backup")
        return cls(path, keys)

    def rotate(self) -> str:
        """Add a new active key, keep the old ones for unsealing, save atomically; new key id."""
        key = _new_key({k.key_id for k in self._keys})
        self._keys.append(key)
        try:
            self._write(replace_existing=True)
        except BaseException:
            self._keys.pop()
            raise
        return key.key_id

    def _write(self, replace_existing: bool) -> None:
        """Write to a temporary file (0600, fsync), then rename or link it into place."""
        payload = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "note": "Secret. Keep mode 0600 and back it up; never copy it to another stage.",
            "keys": [{"key_id": k.key_id, "created": k.created,
                      "secret": base64.b64encode(k.secret).decode("ascii")} for k in self._keys],
        }
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                os.fchmod(fh.fileno(), 0o600)  # the umask must not widen or narrow it
                json.dump(payload, fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            if replace_existing:
                os.replace(tmp, self.path)
            else:
                try:
                    os.link(tmp, self.path)  # fails if a file appeared meanwhile
                except FileExistsError:
                    raise KeyRingError(f"key ring {self.path} appeared while it was being"
                                       " created; it was left untouched") from None
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.path.parent)

    # --- keys ---------------------------------------------------------------------------------

    @property
    def active_key_id(self) -> str:
        return self._keys[-1].key_id

    @property
    def key_ids(self) -> list[str]:
        """All key ids, oldest first."""
        return [k.key_id for k in self._keys]

    def _key(self, key_id: str | None) -> _Key:
        if key_id is None:
            return self._keys[-1]
        for key in self._keys:
            if key.key_id == key_id:
                return key
        raise KeyError(f"key id {key_id!r} is not in key ring {self.path}")

    def subkey(self, purpose: str, key_id: str | None = None) -> bytes:
        """32 bytes derived with HKDF-SHA256 from one master key (the active one by default)."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown key purpose {purpose!r}; expected one of {PURPOSES}")
        key = self._key(key_id)
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=f"tce-appliance/{purpose}/v1".encode("ascii"))
        return hkdf.derive(key.secret)

    def engine_keys(self, key_id: str | None = None) -> EngineKeys:
        """The derived keys the de-identification engine needs; it never sees the master."""
        key = self._key(key_id)
        return EngineKeys(uid=self.subkey("uid", key.key_id),
                          pseudonym=self.subkey("pseudonym", key.key_id),
                          date=self.subkey("date", key.key_id), key_id=key.key_id)

    # --- sealing ------------------------------------------------------------------------------

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """AES-256-GCM under the active key: ``TCE1 | len | key id | nonce | ciphertext``.

        ``context`` is authenticated but not stored (e.g. the pseudonymized UID the original
        belongs to), so a token copied to another record fails to unseal there.
        """
        key_id = self.active_key_id.encode("ascii")
        header = _TOKEN_MAGIC + bytes([len(key_id)]) + key_id
        nonce = os.urandom(_NONCE_BYTES)
        aead = AESGCM(self.subkey("seal"))
        return header + nonce + aead.encrypt(nonce, plaintext, header + context)

    def unseal(self, token: bytes, context: bytes) -> bytes:
        """Reverse :meth:`seal` with whichever key sealed the token; :class:`UnsealError` if not."""
        if not token.startswith(_TOKEN_MAGIC) or len(token) < len(_TOKEN_MAGIC) + 1:
            raise UnsealError("not a sealed token (wrong prefix)")
        n = token[len(_TOKEN_MAGIC)]
        start = len(_TOKEN_MAGIC) + 1
        header, rest = token[:start + n], token[start + n:]
        key_id = header[start:].decode("ascii", errors="replace")
        try:
            key = self._key(key_id)
        except KeyError:
            raise UnsealError(f"token was sealed with key {key_id!r}, which this key ring"
                              " does not hold") from None
        nonce, ciphertext = rest[:_NONCE_BYTES], rest[_NONCE_BYTES:]
        try:
            aead = AESGCM(self.subkey("seal", key.key_id))
            return aead.decrypt(nonce, ciphertext, header + context)
        except (InvalidTag, ValueError):
            raise UnsealError("token was altered or belongs to another context") from None


def _new_key(taken: set[str]) -> _Key:
    while True:
        key_id = secrets.token_hex(4)
        if key_id not in taken:
            break
    created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return _Key(key_id=key_id, created=created, secret=secrets.token_bytes(SECRET_BYTES))


def _parse_key(entry: Any) -> _Key:
    secret = base64.b64decode(entry["secret"], validate=True)
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"key {entry.get('key_id')!r} secret is {len(secret)} bytes, not 32")
    key_id = str(entry["key_id"])
    if not key_id or len(key_id) > 64 or not key_id.isascii():
        raise ValueError(f"bad key id {key_id!r}")
    return _Key(key_id=key_id, created=str(entry["created"]), secret=secret)


def _ensure_parent(path: Path) -> None:
    """Create missing parent folders with mode 0700; existing folders are left as they are."""
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700)
        os.chmod(folder, 0o700)

"""Keyed derivations the engine needs: UIDs, pseudonyms, hashes and per-patient date shifts.

The engine receives raw key bytes (:class:`EngineKeys`), never the key ring file, so that
``policies/`` stays free of I/O. Every derivation is HMAC-SHA256 under a purpose-specific key with a
domain string, so the same key gives the same output in every run, process and stage, and nobody
without the key can confirm a guess (PatientID spaces are small enough to brute-force an unkeyed
hash).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass


@dataclass(frozen=True)
class EngineKeys:
    """Purpose-separated HMAC keys, derived by the key ring from its active master secret."""

    uid: bytes
    pseudonym: bytes
    date: bytes
    key_id: str = "test"

    @classmethod
    def for_testing(cls, seed: bytes = b"tce-test") -> EngineKeys:
        """Deterministic keys for tests and examples; never use them for real data."""
        return cls(
            uid=hashlib.sha256(seed + b"|uid").digest(),
            pseudonym=hashlib.sha256(seed + b"|pseudonym").digest(),
            date=hashlib.sha256(seed + b"|date").digest(),
            key_id="test",
        )


def mac(key: bytes, domain: str, value: str) -> bytes:
    """HMAC-SHA256 of ``domain`` NUL ``value``; the domain keeps derivations for different
    attributes apart, so a PatientID and an AccessionNumber with equal text differ."""
    return hmac.new(key, f"{domain}\x00{value}".encode(), hashlib.sha256).digest()


_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


def code(key: bytes, domain: str, value: str, length: int) -> str:
    """An upper-case keyed code of ``length`` characters, valid in every DICOM string VR."""
    digest = mac(key, domain, value)
    number = int.from_bytes(digest, "big")
    out = []
    for _ in range(length):
        number, rest = divmod(number, 32)
        out.append(_ALPHABET[rest])
    return "".join(out)


def keyed_uid(key: bytes, uid: str, root: str = "2.25") -> str:
    """Map a UID to ``2.25.<decimal>`` deterministically.

    The 128-bit value carries the RFC 9562 UUIDv8 version and variant bits, so the result is a
    valid UUID-derived UID as PS3.5 B.2 describes, and no timestamp of the original survives.
    """
    raw = bytearray(mac(key, "uid", uid)[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8: custom
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122/9562 variant
    if root == "2.25":
        return f"2.25.{int.from_bytes(raw, 'big')}"
    # Other roots: a decimal suffix that fits in 64 characters.
    room = 64 - len(root) - 1
    suffix = str(int.from_bytes(raw, "big"))[:room].lstrip("0") or "1"
    return f"{root}.{suffix}"


def shift_days(key: bytes, patient: str, max_days: int) -> int:
    """A per-patient whole-day offset in [-max, -1] U [1, max]; never 0, so dates always move."""
    number = int.from_bytes(mac(key, "date-shift", patient)[:8], "big")
    magnitude = number % max_days + 1
    return -magnitude if (number >> 40) & 1 else magnitude


def b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")

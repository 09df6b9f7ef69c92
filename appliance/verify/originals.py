"""The originals behind stage 1's pseudonyms, turned into byte patterns for an exact leak scan.

Stage 1 seals the original of every pseudonym it issues (:class:`appliance.models.Pseudonym`,
AES-GCM under the key ring, authenticated with the DICOM keyword). With that key ring,
verification unseals them all and looks for each one in every byte of the output. The sealed
values are handled generically: whatever was sealed, under whichever keyword, is searched for.
(Stage 1's PatientName pseudonym is derived from the Patient ID, but what is sealed under it is
the name it replaced, each spelling once, so names are searched for too.)

Forms searched. Each original as written; a value with a ``^`` (a person name) also in its
other component orders and separators (``Given Family``, ``Family, Given``, ``Given^Family``,
...), for each ``=`` group. Each form is encoded as ASCII (if it is), else Latin-1 (if it can
be) and UTF-8, and always as UTF-16 (little and big endian; for text within Latin-1 one pattern
covers both, see :func:`_encodings`). ASCII letters match in any case (the scanned bytes are
lowered with ``bytes.lower()``, far faster than a case-insensitive expression); other letters
as written, in upper case and in lower case. Forms shorter than :data:`MIN_CHARS` characters
are not searched (they would match pixel noise) and are counted in the report.

One compiled regular expression holds every pattern, factored as a trie, so the scan costs one
pass over each file however many originals there are (about 240 MB/s measured with 14 and with
10,000 originals; building the expression is what grows, 4 s for 10,000).

Nothing here prints or returns an original: an :class:`Original` is named by its keywords, its
pseudonym and a keyed hash prefix (the HMAC lookup stage 1 stores).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import permutations

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from appliance.keys import KeyRing, UnsealError
from appliance.models import Pseudonym
from appliance.settings import ConfigError, Settings

MIN_CHARS = 5
ENCODINGS = ("ASCII", "Latin-1", "UTF-8", "UTF-16")


@dataclass
class Original:
    """One unsealed original value; ``text`` must never reach a report or a log."""

    text: str
    keywords: list[str] = field(default_factory=list)
    pseudonym: str = ""
    ref: str = ""  # keyed hash prefix (stage 1's HMAC lookup), safe to print

    @property
    def kind(self) -> str:
        return "/".join(dict.fromkeys(self.keywords)) + " original"


class OriginalsError(ConfigError):
    """The originals cannot be read: wrong node, no key ring, no sealed originals (exit 2)."""


def load_originals(settings: Settings) -> list[Original]:
    """Unseal every original stage 1 sealed, merged by value (same value, several keywords)."""
    from appliance.db import make_engine, schema_version

    if "stage1" not in settings.roles:
        raise OriginalsError(f"--originals needs stage 1's configuration (this one's role is"
                             f" {settings.role}): only stage 1 holds the sealed originals")
    ring = KeyRing.load(settings.key_ring)
    engine = make_engine(str(settings.database_url))
    try:
        if schema_version(engine) is None:
            raise OriginalsError("the database holds no tce-appliance schema, so no sealed"
                                 " originals: check database_url in the configuration")
        with engine.connect() as conn:
            rows = list(conn.execute(select(Pseudonym.keyword, Pseudonym.pseudonym,
                                            Pseudonym.lookup, Pseudonym.sealed)))
    except SQLAlchemyError as exc:
        raise OriginalsError(f"cannot read the sealed originals from the database"
                             f" ({type(exc).__name__}); check database_url") from None
    finally:
        engine.dispose()
    if not rows:
        raise OriginalsError("the database holds no sealed originals: --originals needs the"
                             " stage-1 node that pseudonymized this output")
    merged: dict[str, Original] = {}
    for keyword, pseudonym, lookup, sealed in rows:
        try:
            text = ring.unseal(bytes(sealed), str(keyword).encode("ascii")).decode("utf-8")
        except (UnsealError, UnicodeDecodeError) as exc:
            raise OriginalsError(f"a sealed original ({keyword}, pseudonym {pseudonym}) cannot"
                                 f" be unsealed with key ring {settings.key_ring}: {exc}") \
                from None
        original = merged.setdefault(text, Original(text))
        original.keywords = sorted([*original.keywords, str(keyword)])
        if original.keywords[0] == str(keyword):  # named by its first keyword's pseudonym
            original.pseudonym, original.ref = str(pseudonym), str(lookup)[:12]
    return list(merged.values())


def name_forms(text: str) -> list[tuple[str, str]]:
    """(form, label) for a value: itself, and for a person name its other orders and
    separators. Labels describe the form ("another component order as plain text"); they
    never hold the value."""
    forms = [(text, "as written")]
    if "^" not in text:
        return forms
    for group in (g for g in text.split("=") if g):
        parts = [p.strip() for p in group.split("^")[:3] if p.strip()]
        if group != text:
            forms.append((group, "one PN component group"))
        if len(parts) < 2:
            continue
        for order in permutations(parts):
            label = "another component order" if list(order) != parts else "PN components"
            for separator in ("^", " ", ", ", ","):
                form = separator.join(order)
                if form != text and form != group:
                    forms.append((form, label if separator == "^" else f"{label} as plain"
                                  " text"))
    return forms


def _encodings(form: str) -> list[tuple[bytes, str]]:
    out: list[tuple[bytes, str]] = []
    if form.isascii():
        out.append((form.encode("ascii"), "ASCII"))
    else:
        with contextlib.suppress(UnicodeEncodeError):
            out.append((form.encode("latin-1"), "Latin-1"))
        out.append((form.encode("utf-8"), "UTF-8"))
    little = form.encode("utf-16-le")
    if all(ord(ch) <= 0xFF for ch in form):
        # Big endian is then little endian shifted by one byte: the little-endian bytes without
        # their last NUL match both. No pattern starts with NUL, which 16-bit pixel data is
        # full of; that keeps the scan fast.
        out.append((little[:-1], "UTF-16"))
    else:
        out += [(little, "UTF-16"), (form.encode("utf-16-be"), "UTF-16")]
    return out


@dataclass(frozen=True)
class Pattern:
    original: Original
    encoding: str
    form: str  # a label such as "another component order", never the value


class PatternSet:
    """Every byte form of every original, in one compiled expression."""

    def __init__(self, originals: Iterable[Original]) -> None:
        self.originals = list(originals)
        self.by_bytes: dict[bytes, Pattern] = {}
        self.too_short = 0
        for original in self.originals:
            seen_forms: set[str] = set()
            for text, label in name_forms(original.text):
                # ASCII case is folded by lowering the scanned bytes; other letters' case is
                # covered by listing the upper- and lower-case forms.
                variants = [text] if text.isascii() else [text, text.upper(), text.lower()]
                for form in dict.fromkeys(variants):
                    if form in seen_forms:
                        continue
                    seen_forms.add(form)
                    if len(form.strip()) < MIN_CHARS:
                        self.too_short += 1
                        continue
                    for data, encoding in _encodings(form):
                        self.by_bytes.setdefault(data.lower(), Pattern(original, encoding,
                                                                       label))
        self.regex = _trie_regex(sorted(self.by_bytes)) if self.by_bytes else None
        self.longest = max(map(len, self.by_bytes), default=0)

    def match(self, found: bytes) -> Pattern:
        """The pattern a hit in *lowered* bytes (``bytes.lower()``) belongs to."""
        return self.by_bytes[found]


def _trie_regex(words: list[bytes]) -> re.Pattern[bytes]:
    """A regex matching any of ``words``, factored by common prefixes so that matching does not
    try every word at every position. It is case-sensitive: the scanned bytes are lowered
    first, because ``re.IGNORECASE`` makes ``re`` about ten times slower."""
    trie: dict[int, dict] = {}  # type: ignore[type-arg]
    for word in words:
        node = trie
        for byte in word:
            node = node.setdefault(byte, {})
        node[-1] = {}

    def build(node: dict) -> bytes:  # type: ignore[type-arg]
        ends = -1 in node
        branches = [re.escape(bytes([b])) + build(child)
                    for b, child in sorted(node.items()) if b != -1]
        if not branches:
            return b""
        body = branches[0] if len(branches) == 1 and not ends else \
            b"(?:" + b"|".join(branches) + b")"
        return body + (b"?" if ends else b"")

    return re.compile(build(trie), re.DOTALL)

"""Frozen settings loaded from ``tce.yaml``: what one node of the appliance is configured to do.

Loading is strict: an unknown key or a value of the wrong type is an error that names the key path,
because a misspelt setting that is silently ignored (``alowed_callers``) can open an appliance that
holds PHI to callers it should refuse. Every field carries a one-line ``doc`` so that ``tce init``
and the README's configuration reference are generated from this model and cannot drift from it.

Path rules: ``work_dir`` is resolved against the folder of the configuration file; every other
relative path is resolved against ``work_dir``. After :func:`load` every path is absolute and
``database_url`` is set. Settings are passed down explicitly; there is no global instance.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

ROLES = ("all", "stage1", "stage2", "receiver")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DATABASE_URL_ENV = "TCE_DATABASE_URL"

# Accepted when a `transfer_syntaxes` list is empty: uncompressed, deflated and every compressed
# syntax the pylibjpeg plugins can decode (stage 1 must decode pixels to look for burned-in text).
DEFAULT_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction (Process 14 SV1)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Lossy (Near-Lossless)
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 (Lossless Only)
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)


class ConfigError(Exception):
    """Bad configuration or usage; the CLI prints the message and exits with status 2."""


class SettingsError(ConfigError):
    """``tce.yaml`` could not be read or holds an invalid value; the message names the key path."""


# --- validators: each returns None when the value is fine, else what is wrong with it -------------

Check = Callable[[Any], "str | None"]
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def check_ae_title(value: str) -> str | None:
    if not 1 <= len(value) <= 16:
        return f"AE title {value!r} must be 1 to 16 characters long"
    if "\\" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"AE title {value!r} must not contain a backslash or control characters"
    if not value.strip(" "):
        return "AE title must not be all spaces"
    if not value.isascii():
        return f"AE title {value!r} must be ASCII"
    return None


def check_port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else f"port {value} is outside 1..65535"


def at_least(minimum: int) -> Check:
    def check(value: int) -> str | None:
        return None if value >= minimum else f"{value} is less than the minimum {minimum}"

    return check


def one_of(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"{value!r} is not one of {', '.join(choices)}"

    return check


def check_callers(values: tuple[str, ...]) -> str | None:
    for entry in values:
        ae, sep, host = entry.partition("@")
        problem = check_ae_title(ae)
        if problem:
            return f"entry {entry!r}: {problem} (write 'AE' or 'AE@host')"
        if sep and (not host or any(c.isspace() for c in host)):
            return f"entry {entry!r}: host after '@' must be a name or address without spaces"
    return None


def check_uids(values: tuple[str, ...]) -> str | None:
    for uid in values:
        if len(uid) > 64 or not _UID.match(uid):
            return f"{uid!r} is not a DICOM UID (dotted digits, at most 64 characters)"
    return None


def _meta(doc: str, check: Check | None = None) -> dict[str, Any]:
    return {"doc": doc, "check": check}


def _ae(default: str, doc: str) -> Any:
    return field(default=default, metadata=_meta(doc, check_ae_title))


def _port(default: int, doc: str) -> Any:
    return field(default=default, metadata=_meta(doc, check_port))


def _int(default: int | None, doc: str, minimum: int = 1) -> Any:
    return field(default=default, metadata=_meta(doc, at_least(minimum)))


def _list(doc: str, check: Check) -> Any:
    return field(default=(), metadata=_meta(doc, check))


# --- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage1Settings:
    """Stage 1 (hospital side): receives from modalities/PACS, pseudonymizes, writes PDI media."""

    ae_title: str = _ae("TCE_STAGE1", "AE title of the stage-1 C-STORE SCP.")
    bind: str = field(default="127.0.0.1", metadata=_meta("Address the SCP listens on."))
    port: int = _port(11112, "TCP port the SCP listens on.")
    allowed_callers: tuple[str, ...] = _list(
        "Calling AE titles allowed to connect, as 'AE' or 'AE@host'; empty allows any caller.",
        check_callers)
    policy: str = field(default="stage1-pseudonymize",
                        metadata=_meta("Policy id (or YAML file) applied to every instance."))
    spool_dir: Path = field(default=Path("stage1/spool"), metadata=_meta(
        "Where received instances are fsynced before processing (holds PHI)."))
    store_dir: Path = field(default=Path("stage1/store"), metadata=_meta(
        "Where pseudonymized studies are staged for media."))
    media_dir: Path = field(default=Path("stage1/media"), metadata=_meta(
        "Parent of the dated folders 'tce stage1 media write' creates when given no OUT."))
    quiet_period_seconds: int = _int(
        60, "Seconds without new instances after which a study counts as complete.", minimum=0)
    max_associations: int = _int(10, "Maximum number of simultaneous associations.")
    acse_timeout: int = _int(30, "Seconds to wait for association messages (ACSE).")
    dimse_timeout: int = _int(
        60, "Seconds to wait for the next fragment of a C-STORE request once it has begun; then"
            " the association is aborted and the partial instance discarded.")
    network_timeout: int = _int(
        60, "Seconds an association may idle between messages before it is dropped.")
    sop_classes: tuple[str, ...] = _list(
        "Storage SOP Class UIDs accepted; empty accepts all storage SOP classes.", check_uids)
    transfer_syntaxes: tuple[str, ...] = _list(
        "Transfer Syntax UIDs accepted; empty accepts uncompressed, deflated, JPEG, JPEG-LS,"
        " JPEG 2000 and RLE.", check_uids)
    workers: int = _int(2, "Worker processes that pseudonymize spooled instances.")
    media_volume_bytes: int = _int(
        700_000_000, "Maximum bytes per media volume (700000000 fits a CD).", minimum=1_000_000)


@dataclass(frozen=True)
class ReceiverPeer:
    """Where stage 2 sends anonymized studies (the Receiver's C-STORE SCP)."""

    ae_title: str = _ae("TCE_RECEIVER", "Called AE title of the Receiver.")
    host: str = field(default="127.0.0.1", metadata=_meta("Host name or address of the Receiver."))
    port: int = _port(11114, "TCP port of the Receiver.")


@dataclass(frozen=True)
class Stage2Settings:
    """Stage 2 (research side): imports media, waits for approval, anonymizes and exports.

    Studies reach stage 2 only on PDI media. Its SCP answers C-ECHO and nothing else, so that
    ``tce status --echo`` and a container healthcheck can see that the node answers, as they do
    for stage 1 and the Receiver; a storage association is refused at presentation-context level.
    """

    # One AE title for both roles of the node: the calling AE title of its exports to the
    # Receiver and the called AE title of its Verification SCP. A second title would let the two
    # drift apart, and the Receiver's allow-list and a monitor's echo name the same node.
    ae_title: str = _ae("TCE_STAGE2", "AE title of stage 2: calling AE of its exports to the"
                        " Receiver, called AE of its C-ECHO SCP.")
    bind: str = field(default="127.0.0.1", metadata=_meta(
        "Address the C-ECHO (Verification only) SCP listens on."))
    port: int = _port(11113, "TCP port of the C-ECHO SCP; it refuses every storage association.")
    allowed_callers: tuple[str, ...] = _list(
        "Calling AE titles allowed to C-ECHO, as 'AE' or 'AE@host'; empty allows any caller.",
        check_callers)
    store_dir: Path = field(default=Path("stage2/store"), metadata=_meta(
        "Where imported studies wait for approval and export."))
    media_watch_dir: Path | None = field(default=None, metadata=_meta(
        "Folder or mount point watched for new PDI media; null disables watching."))
    receiver: ReceiverPeer = field(default_factory=ReceiverPeer,
                                   metadata=_meta("Receiver that approved studies are sent to."))
    max_attempts: int = _int(5, "Export attempts per study before it is marked FAILED.")
    backoff_seconds: int = _int(30, "Delay before the first retry; doubles on each retry.", 0)
    backoff_max_seconds: int = _int(3600, "Upper bound of the retry delay.", 0)
    retention_days: int | None = _int(
        None, "Days to keep exported studies in store_dir; null keeps them.")
    poll_seconds: int = _int(10, "How often the scheduler looks for media and approved work.")
    acse_timeout: int = _int(30, "Seconds to wait for association messages (ACSE).")
    dimse_timeout: int = _int(60, "Seconds to wait for DIMSE messages.")
    network_timeout: int = _int(60, "Seconds of network silence before an association is dropped.")


@dataclass(frozen=True)
class ReceiverSettings:
    """Receiver: a C-STORE SCP sink for anonymized studies, optionally writing PDI media."""

    ae_title: str = _ae("TCE_RECEIVER", "AE title of the Receiver's C-STORE SCP.")
    bind: str = field(default="127.0.0.1", metadata=_meta("Address the SCP listens on."))
    port: int = _port(11114, "TCP port the SCP listens on.")
    allowed_callers: tuple[str, ...] = _list(
        "Calling AE titles allowed to connect, as 'AE' or 'AE@host'; empty allows any caller.",
        check_callers)
    store_dir: Path = field(default=Path("receiver/store"), metadata=_meta(
        "Where received instances are stored."))
    media_dir: Path = field(default=Path("receiver/media"), metadata=_meta(
        "Parent of the dated folders 'tce receiver media write' creates when given no OUT."))
    max_associations: int = _int(10, "Maximum number of simultaneous associations.")
    acse_timeout: int = _int(30, "Seconds to wait for association messages (ACSE).")
    dimse_timeout: int = _int(60, "Seconds to wait for DIMSE messages.")
    network_timeout: int = _int(60, "Seconds of network silence before an association is dropped.")
    sop_classes: tuple[str, ...] = _list(
        "Storage SOP Class UIDs accepted; empty accepts all storage SOP classes.", check_uids)
    transfer_syntaxes: tuple[str, ...] = _list(
        "Transfer Syntax UIDs accepted; empty accepts the same defaults as stage 1.", check_uids)


@dataclass(frozen=True)
class Settings:
    """One node's configuration. After :func:`load`, paths are absolute and database_url is set."""

    work_dir: Path = field(default=Path("."), metadata=_meta(
        "Folder that other relative paths are resolved against (itself relative to this file)."))
    database_url: str | None = field(default=None, metadata=_meta(
        "SQLAlchemy URL; null means sqlite:///<work_dir>/tce.sqlite3. Env TCE_DATABASE_URL wins."))
    key_ring: Path = field(default=Path("keys/keyring.json"), metadata=_meta(
        "Key ring file (mode 0600); stage 1 and stage 2 must never share one."))
    quarantine_dir: Path = field(default=Path("quarantine"), metadata=_meta(
        "Where copies of files that cannot be processed go, each with a reason file."))
    log_level: str = field(default="INFO", metadata=_meta(
        "One of DEBUG, INFO, WARNING, ERROR, CRITICAL.", one_of(*LOG_LEVELS)))
    log_file: Path | None = field(default=None, metadata=_meta(
        "JSON-lines log file (e.g. logs/tce.log); null logs to stderr."))
    role: str = field(default="all", metadata=_meta(
        "What this node runs: all (demo), stage1, stage2 or receiver.", one_of(*ROLES)))
    stage1: Stage1Settings = field(default_factory=Stage1Settings,
                                   metadata=_meta("Stage 1: receive and pseudonymize."))
    stage2: Stage2Settings = field(default_factory=Stage2Settings,
                                   metadata=_meta("Stage 2: approve, anonymize and export."))
    receiver: ReceiverSettings = field(default_factory=ReceiverSettings,
                                       metadata=_meta("Receiver: store anonymized studies."))
    path: Path | None = field(default=None, compare=False, metadata={"internal": True})

    @property
    def config_dir(self) -> Path | None:
        """Folder of the configuration file, or None for settings built in memory."""
        return None if self.path is None else self.path.parent

    @property
    def db_url(self) -> str:
        """The database URL; only settings that went through :func:`load` have one."""
        if self.database_url is None:
            raise ValueError("settings have no database_url: load them with settings.load()")
        return self.database_url

    @property
    def roles(self) -> tuple[str, ...]:
        """The services this node runs: ``all`` expands to stage1, stage2 and receiver."""
        return ROLES[1:] if self.role == "all" else (self.role,)

    def directories(self) -> tuple[Path, ...]:
        """Working folders this node's roles write to (what ``tce init`` creates)."""
        dirs: list[Path] = [self.quarantine_dir]
        if self.log_file is not None:
            dirs.append(self.log_file.parent)
        if "stage1" in self.roles:
            dirs += [self.stage1.spool_dir, self.stage1.store_dir, self.stage1.media_dir]
        if "stage2" in self.roles:
            dirs.append(self.stage2.store_dir)
        if "receiver" in self.roles:
            dirs += [self.receiver.store_dir, self.receiver.media_dir]
        return tuple(dirs)


def effective_transfer_syntaxes(configured: tuple[str, ...]) -> tuple[str, ...]:
    """The configured transfer syntaxes, or the defaults when the list is empty."""
    return configured or DEFAULT_TRANSFER_SYNTAXES


# --- loading ----------------------------------------------------------------------------------


def load(path: Path | str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate ``tce.yaml``; raise :class:`SettingsError` naming the file and key path."""
    path = Path(path).expanduser().absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(
            f"configuration file {path} does not exist: check --config or TCE_CONFIG,"
            " or run 'tce init DIR' to create one") from None
    except OSError as exc:
        raise SettingsError(f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        raise SettingsError(f"{path}: not valid YAML{where}: fix the syntax"
                            f" ({getattr(exc, 'problem', None) or exc})") from None
    try:
        return from_mapping(data if data is not None else {}, base_dir=path.parent, path=path,
                            environ=environ)
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from None


def from_mapping(data: Any, base_dir: Path, path: Path | None = None,
                 environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from parsed YAML; relative paths resolve as the module docstring says."""
    environ = os.environ if environ is None else environ
    settings: Settings = _build(Settings, data, "")
    work_dir = (base_dir / settings.work_dir).resolve()
    settings = _resolve_paths(settings, work_dir)
    settings = replace(settings, work_dir=work_dir, path=path)
    if settings.stage2.backoff_max_seconds < settings.stage2.backoff_seconds:
        raise SettingsError("stage2.backoff_max_seconds: must not be less than"
                            " stage2.backoff_seconds")
    url = environ.get(DATABASE_URL_ENV) or settings.database_url
    if not url:
        url = f"sqlite:///{work_dir / 'tce.sqlite3'}"
    return replace(settings, database_url=url)


def defaults(base_dir: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Default settings rooted at ``base_dir``, as if an empty tce.yaml lived there (for tests)."""
    return from_mapping({}, base_dir=Path(base_dir).absolute(), environ=environ)


def _config_fields(cls: type) -> list[Any]:
    return [f for f in fields(cls) if not f.metadata.get("internal")]


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: expected a mapping of settings, got {_kind(data)}")
    known = {f.name: f for f in _config_fields(cls)}
    for key in data:
        if key not in known:
            raise SettingsError(
                f"{prefix}{key}: unknown setting; remove it or fix its spelling"
                f" (settings here: {', '.join(known)})")
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name not in data:
            continue
        keypath = f"{prefix}{name}"
        value = _convert(data[name], hints[name], keypath)
        check = f.metadata.get("check")
        if check is not None and value is not None:
            problem = check(value)
            if problem:
                raise SettingsError(f"{keypath}: {problem}")
        values[name] = value
    return cls(**values)


def _convert(value: Any, tp: Any, keypath: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        inner = [a for a in get_args(tp) if a is not NoneType]
        return None if value is None else _convert(value, inner[0], keypath)
    if is_dataclass(tp):
        return _build(tp, {} if value is None else value, keypath + ".")  # type: ignore[arg-type]
    if tp is str:
        if not isinstance(value, str):
            raise SettingsError(f"{keypath}: expected a string, got {_kind(value)};"
                                " put it in quotes")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{keypath}: expected a whole number, got {_kind(value)}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise SettingsError(f"{keypath}: expected a path, got {_kind(value)}")
        return Path(value).expanduser()
    if origin is tuple:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise SettingsError(f"{keypath}: expected a list, got {_kind(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise SettingsError(f"{keypath}[{i}]: expected a string, got {_kind(item)}")
        return tuple(value)
    raise TypeError(f"settings model: unsupported type {tp!r} at {keypath}")  # programming error


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    names = {bool: "true/false", int: "a number", float: "a number", str: "text",
             list: "a list", dict: "a mapping"}
    return f"{names.get(type(value), type(value).__name__)} {value!r}"


def _resolve_paths(obj: Any, base: Path) -> Any:
    changes: dict[str, Any] = {}
    for f in _config_fields(type(obj)):
        value = getattr(obj, f.name)
        if isinstance(value, Path):
            changes[f.name] = (base / value).absolute()
        elif is_dataclass(value):
            changes[f.name] = _resolve_paths(value, base)
    return replace(obj, **changes)


# --- self-description (for tce init and the README) -------------------------------------------


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        inner = [a for a in get_args(tp) if a is not NoneType]
        return f"{_type_name(inner[0])} or null"
    if origin is tuple:
        return "list of strings"
    return {str: "string", int: "integer", Path: "path"}.get(tp, getattr(tp, "__name__", str(tp)))


def yaml_value(value: Any) -> str:
    """A default rendered as it is written in tce.yaml (``null``, ``[]``, quoted when needed)."""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    dumped: str = yaml.safe_dump(value, default_flow_style=True, width=1000)
    return dumped.removesuffix("\n...\n").strip()


def iter_model(cls: type = Settings, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(key path, dataclass field, resolved type) for every configurable field, sections too."""
    out: list[tuple[str, Any, Any]] = []
    hints = get_type_hints(cls)
    for f in _config_fields(cls):
        out.append((f"{prefix}{f.name}", f, hints[f.name]))
        if is_dataclass(hints[f.name]):
            out += iter_model(hints[f.name], f"{prefix}{f.name}.")
    return out


def field_default(f: Any) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def describe_settings() -> list[tuple[str, str, str, str]]:
    """(key path, type, default as written in YAML, one-line doc) for every leaf setting."""
    return [(key, _type_name(tp), yaml_value(field_default(f)), f.metadata["doc"])
            for key, f, tp in iter_model() if not is_dataclass(tp)]

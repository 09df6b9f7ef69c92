"""The tables of all three nodes (stage 1, stage 2, Receiver), as SQLAlchemy 2 typed models.

The rule that shapes every table: **no column holds an original identifier in plain text.**

* Duplicate C-STOREs are detected with ``Instance.received_key``, a keyed HMAC of the original
  SOP Instance UID computed by the caller, never the UID itself.
* Originals that must be recoverable (stage 1 re-identification by the data owner) are kept in
  ``Pseudonym.sealed``: an AEAD token from :meth:`appliance.keys.KeyRing.seal`, found again
  through ``Pseudonym.lookup`` (an HMAC), so the same original is stored once.
* Stage-2 jobs hold stage-1 *pseudonymized* UIDs; the Receiver holds anonymized ones.
* Free-text columns (``error``, ``reason``, ``details``) are written by code that must keep PHI
  out of them; :func:`appliance.audit.record_audit` refuses PHI-named detail keys.

Column names never match the PHI deny-list of :mod:`appliance.logging`; a test checks it, so a
``patient_name`` column cannot slip in. States are str enums stored as their value in a plain
VARCHAR (no native ENUM type, no CHECK): adding a state needs no migration, and SQL tools read
``'PENDING_APPROVAL'``. Times are timezone-aware UTC on both SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

UID = 64  # VR UI maximum length
SHA256_HEX = 64
KEY_LEN = 128  # HMAC lookups and received keys (hex or base64, maybe with a key-id prefix)
AE = 16  # VR AE maximum length
LABEL = 128  # policy ids, user names, short labels


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend; naive datetimes are refused.

    SQLite has no time zone type and would hand back naive values that compare wrongly with
    ``datetime.now(UTC)`` (a delayed export would fire at the wrong hour); PostgreSQL hands back
    values in the session's time zone. Both are normalized to UTC here.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC) or"
                             " attach a time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum(cls: type[StrEnum]) -> Enum:
    """Store a str enum's *value* in a VARCHAR; unknown strings are refused on write."""
    return Enum(cls, native_enum=False, create_constraint=False, length=32,
                validate_strings=True, values_callable=lambda e: [m.value for m in e])


class Node(StrEnum):
    STAGE1 = "stage1"
    STAGE2 = "stage2"
    RECEIVER = "receiver"


class InstanceState(StrEnum):
    RECEIVED = "RECEIVED"  # spooled (fsync'd), C-STORE answered
    PROCESSING = "PROCESSING"  # claimed by a worker; reset to RECEIVED on restart
    PROCESSED = "PROCESSED"  # pseudonymized/anonymized and stored under its new UIDs
    STORED = "STORED"  # Receiver: kept as received
    EXPORTED = "EXPORTED"  # written to media or sent on
    QUARANTINED = "QUARANTINED"
    FAILED = "FAILED"


class StudyState(StrEnum):
    RECEIVING = "RECEIVING"
    COMPLETE = "COMPLETE"  # quiet for long enough: ready for media
    MEDIA_WRITTEN = "MEDIA_WRITTEN"
    FAILED = "FAILED"


class JobState(StrEnum):
    IMPORTED = "IMPORTED"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    APPROVED = "APPROVED"
    DELAYED = "DELAYED"
    EXPORTING = "EXPORTING"
    EXPORTED = "EXPORTED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"


class SendStatus(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"


class ImportVia(StrEnum):
    DICOMDIR = "DICOMDIR"
    FOLDER_SCAN = "folder scan"


class Base(DeclarativeBase):
    # Named constraints: migrations can drop or alter them by the same name on both backends.
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, str: String(LABEL)}


class SchemaVersion(Base):
    """One row per schema version applied; the newest is the database's version."""

    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)


class Instance(Base):
    """One DICOM instance a node received (stage 1, Receiver) or produced."""

    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("node", "received_key"),
        Index(None, "node", "state"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    node: Mapped[Node] = mapped_column(_enum(Node))
    received_key: Mapped[str] = mapped_column(String(KEY_LEN))  # HMAC of original SOP Inst UID
    state: Mapped[InstanceState] = mapped_column(_enum(InstanceState),
                                                 default=InstanceState.RECEIVED)
    sop_class_uid: Mapped[str] = mapped_column(String(UID))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID))
    new_sop_instance_uid: Mapped[str | None] = mapped_column(String(UID), index=True)
    new_study_instance_uid: Mapped[str | None] = mapped_column(String(UID), index=True)
    new_series_instance_uid: Mapped[str | None] = mapped_column(String(UID))
    spool_path: Mapped[str | None] = mapped_column(Text)
    store_path: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(SHA256_HEX))
    calling_ae: Mapped[str | None] = mapped_column(String(AE))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)  # technical message, no PHI


class Study(Base):
    """A study as a node holds it, under its new (pseudonymized or anonymized) UID."""

    __tablename__ = "studies"
    __table_args__ = (
        UniqueConstraint("node", "new_study_instance_uid"),
        Index(None, "node", "state"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    node: Mapped[Node] = mapped_column(_enum(Node))
    new_study_instance_uid: Mapped[str] = mapped_column(String(UID))
    patient_pseudonym: Mapped[str | None] = mapped_column(String(UID))  # stage-1 PatientID
    state: Mapped[StudyState] = mapped_column(_enum(StudyState), default=StudyState.RECEIVING)
    instance_count: Mapped[int] = mapped_column(default=0)
    first_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    media_written_at: Mapped[datetime | None]


class Pseudonym(Base):
    """A stage-1 pseudonym and its sealed original; only the key ring can unseal it."""

    __tablename__ = "pseudonyms"
    __table_args__ = (UniqueConstraint("keyword", "pseudonym"),)  # a collision is an error
    id: Mapped[int] = mapped_column(primary_key=True)
    keyword: Mapped[str] = mapped_column(String(64))  # DICOM keyword, e.g. PatientID
    pseudonym: Mapped[str] = mapped_column(String(UID))
    lookup: Mapped[str] = mapped_column(String(KEY_LEN), unique=True)  # HMAC(keyword, original)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)  # KeyRing.seal token, not plain text
    key_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Media(Base):
    """A PDI media set (folder, USB stick or CD image) a node wrote."""

    __tablename__ = "media"
    id: Mapped[int] = mapped_column(primary_key=True)
    node: Mapped[Node] = mapped_column(_enum(Node))
    path: Mapped[str] = mapped_column(Text)
    volume: Mapped[str | None] = mapped_column(String(64))
    file_set_uid: Mapped[str | None] = mapped_column(String(UID))
    profile: Mapped[str | None] = mapped_column(String(64))
    instance_count: Mapped[int] = mapped_column(default=0)
    study_count: Mapped[int] = mapped_column(default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    studies: Mapped[list[MediaStudy]] = relationship(back_populates="media",
                                                     cascade="all, delete-orphan")


class MediaStudy(Base):
    """Which (new) study UIDs a media set carries."""

    __tablename__ = "media_studies"
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"),
                                          primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(UID), primary_key=True, index=True)
    media: Mapped[Media] = relationship(back_populates="studies")


class AuditEvent(Base):
    """Who did what to which (new) UID or job, under which policy. Written by record_audit."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    node: Mapped[Node] = mapped_column(_enum(Node))
    actor: Mapped[str] = mapped_column(String(LABEL), default="system")
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str | None] = mapped_column(String(LABEL), index=True)
    policy_id: Mapped[str | None]
    policy_version: Mapped[str | None] = mapped_column(String(32))
    policy_digest: Mapped[str | None] = mapped_column(String(SHA256_HEX))
    details: Mapped[str] = mapped_column(Text, default="{}")  # JSON object, no PHI


class QuarantineItem(Base):
    """A file set aside by :mod:`appliance.quarantine`, and whether someone released it."""

    __tablename__ = "quarantine_items"
    __table_args__ = (Index(None, "node", "released_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    node: Mapped[Node] = mapped_column(_enum(Node))
    stored_path: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)  # no PHI: shown in listings
    stage: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(SHA256_HEX), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None]
    released_by: Mapped[str | None]


class MediaImport(Base):
    """One stage-2 import of a media set; the fingerprint makes a re-import a no-op."""

    __tablename__ = "media_imports"
    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(SHA256_HEX), unique=True)
    root_label: Mapped[str | None] = mapped_column(Text)
    via: Mapped[ImportVia] = mapped_column(_enum(ImportVia))
    problems: Mapped[str] = mapped_column(Text, default="[]")  # JSON list, no PHI
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)
    instance_count: Mapped[int] = mapped_column(default=0)
    study_count: Mapped[int] = mapped_column(default=0)
    jobs: Mapped[list[Job]] = relationship(back_populates="media_import")


class Job(Base):
    """A stage-2 export job: one imported (stage-1 pseudonymized) study and its approval."""

    __tablename__ = "jobs"
    __table_args__ = (Index(None, "state", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(UID), index=True)  # as imported
    patient_pseudonym: Mapped[str | None] = mapped_column(String(UID))
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.IMPORTED)
    policy_id: Mapped[str | None]
    policy_version: Mapped[str | None] = mapped_column(String(32))
    policy_digest: Mapped[str | None] = mapped_column(String(SHA256_HEX))
    policy_source: Mapped[str | None] = mapped_column(Text)
    approver: Mapped[str | None]
    approved_at: Mapped[datetime | None]
    approval_reason: Mapped[str | None] = mapped_column(Text)
    delay_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    instance_count: Mapped[int] = mapped_column(default=0)
    sent_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    media_import_id: Mapped[int | None] = mapped_column(
        ForeignKey("media_imports.id", ondelete="SET NULL"), index=True)
    media_import: Mapped[MediaImport | None] = relationship(back_populates="jobs")
    instances: Mapped[list[JobInstance]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobInstance.id")


class JobInstance(Base):
    """One instance of a stage-2 job and how sending it went."""

    __tablename__ = "job_instances"
    __table_args__ = (
        UniqueConstraint("job_id", "sop_instance_uid"),
        Index(None, "job_id", "send_status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(String(UID))  # stage-1 pseudonymized
    sop_class_uid: Mapped[str] = mapped_column(String(UID))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID))
    store_path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(SHA256_HEX))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    new_sop_instance_uid: Mapped[str | None] = mapped_column(String(UID), index=True)
    send_status: Mapped[SendStatus] = mapped_column(_enum(SendStatus), default=SendStatus.PENDING)
    dimse_status: Mapped[int | None]
    sent_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    job: Mapped[Job] = relationship(back_populates="instances")


class Heartbeat(Base):
    """The last sign of life of each node's service, for ``tce status`` and monitoring."""

    __tablename__ = "heartbeats"
    node: Mapped[Node] = mapped_column(_enum(Node), primary_key=True)
    pid: Mapped[int]
    host: Mapped[str] = mapped_column(String(255))
    ae_title: Mapped[str | None] = mapped_column(String(AE))
    port: Mapped[int | None]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(default=utcnow)

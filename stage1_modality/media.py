"""Choose the studies for a medium, make sure they are fully processed, write PDI media.

By default a medium carries the COMPLETE studies (quiet for long enough, not yet on media).
``--all`` takes every study received so far: those still inside their quiet period, whose
queued instances are finished first (by the running node if its heartbeat is fresh, otherwise
right here with the same service, and so the same policy and key), and those already written
to earlier media, so a second copy can be made. ``--study`` picks studies by their new UID.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.logging import get_logger
from appliance.models import (
    Instance,
    InstanceState,
    Media,
    MediaStudy,
    Node,
    Study,
    StudyState,
)
from appliance.settings import Settings
from pdi.model import MediaError as PdiMediaError
from pdi.model import MediaOptions, VolumeResult
from pdi.writer import write_media
from stage1_modality.service import complete_quiet_studies, finish_pending

NODE = Node.STAGE1
LOG = get_logger("tce.stage1.media")


class MediaError(PdiMediaError):
    """Nothing to write, or the selection cannot be completed; nothing was written."""



@dataclass(frozen=True)
class Selection:
    studies: tuple[str, ...] = ()  # explicit study UIDs (new, pseudonymized)
    include_receiving: bool = False  # --all: also studies in their quiet period or on media


def select_studies(settings: Settings, sessions: sessionmaker[Session],
                   selection: Selection) -> list[str]:
    explicit = list(selection.studies)
    if selection.include_receiving or explicit:
        finish_pending(settings, sessions, explicit or None)
        complete_quiet_studies(sessions, 0, explicit or None)
    with sessions() as session:
        query = select(Study.new_study_instance_uid).where(Study.node == NODE)
        if explicit:
            query = query.where(Study.new_study_instance_uid.in_(explicit))
            found = list(session.scalars(query))
            missing = sorted(set(explicit) - set(found))
            if missing:
                raise MediaError(f"unknown study UID(s): {', '.join(missing)} "
                                 "(use the pseudonymized UIDs 'tce stage1 studies' lists)")
            return found
        if selection.include_receiving:  # --all: every study received so far, written or not
            return list(session.scalars(query.where(Study.state != StudyState.FAILED)))
        return list(session.scalars(query.where(Study.state == StudyState.COMPLETE)))


def write_selected(settings: Settings, sessions: sessionmaker[Session], out: Path,
                   selection: Selection, options: MediaOptions,
                   overwrite: bool = False) -> list[VolumeResult]:
    studies = select_studies(settings, sessions, selection)
    if not studies:
        raise MediaError("no complete study to write (wait for the quiet period, or use --all)")
    with sessions() as session:
        files = [Path(p) for p in session.scalars(select(Instance.store_path).where(
            Instance.node == NODE, Instance.state == InstanceState.PROCESSED,
            Instance.new_study_instance_uid.in_(studies)).order_by(Instance.id)) if p]
    if not files:
        raise MediaError("the selected studies hold no processed instance")
    volumes = write_media(files, out, options, overwrite=overwrite)
    with sessions.begin() as session:
        now = datetime.now(UTC)
        for volume in volumes:
            media = Media(node=NODE, path=str(volume.path), volume=volume.path.name,
                          file_set_uid=volume.file_set_uid, profile=volume.profile,
                          instance_count=volume.instances, study_count=len(volume.studies),
                          bytes=volume.bytes)
            media.studies = [MediaStudy(study_uid=uid) for uid in volume.studies]
            session.add(media)
            record_audit(session, NODE, "media.written", volume.file_set_uid,
                         studies=len(volume.studies), instances=volume.instances,
                         bytes=volume.bytes)
        for study in session.scalars(select(Study).where(
                Study.node == NODE, Study.new_study_instance_uid.in_(studies))):
            study.state, study.media_written_at = StudyState.MEDIA_WRITTEN, now
    LOG.info("stage1.media_written", volumes=len(volumes), studies=len(studies),
             instances=sum(v.instances for v in volumes))
    return volumes

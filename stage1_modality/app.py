"""Wiring for the stage-1 node: settings → database, key ring, SCP, worker pool, housekeeping.

``Stage1Node.serve()`` runs until SIGTERM or SIGINT, then stops accepting associations, lets the
ones in progress finish, drains the worker queue and returns (exit status 0).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pydicom
from pynetdicom import evt

from appliance.db import open_database, session_factory
from appliance.dimse import handle_echo, make_scp_ae, set_nodelay
from appliance.durable import make_dirs
from appliance.keys import KeyRing
from appliance.logging import get_logger
from appliance.models import Heartbeat, Node
from appliance.settings import Settings, effective_transfer_syntaxes
from policies.engine import Deidentifier
from policies.loader import resolve_policy
from stage1_modality.handlers import StoreHandler
from stage1_modality.service import (
    Stage1Service,
    complete_quiet_studies,
    sweep_leftovers,
)

LOG = get_logger("tce.stage1")


@dataclass(frozen=True)
class Listen:
    ae_title: str
    bind: str
    port: int


class Stage1Node:
    def __init__(self, settings: Settings, listen: Listen | None = None) -> None:
        config = settings.stage1
        self.settings = settings
        self.listen = listen or Listen(config.ae_title, config.bind, config.port)
        self.db = open_database(settings.database_url)
        self.sessions = session_factory(self.db)
        self.keyring = KeyRing.load(settings.key_ring)
        for folder in (config.spool_dir, config.store_dir, settings.quarantine_dir):
            make_dirs(folder)
        # The main process maps Study Instance UIDs at receive time (for quiet-period tracking)
        # with the same engine and key the workers use, so the two always agree.
        self.uid_mapper = Deidentifier(resolve_policy(config.policy), self.keyring.engine_keys())
        self.service = Stage1Service(
            self.sessions, self.keyring, config.policy, store_dir=config.store_dir,
            quarantine_dir=settings.quarantine_dir, workers=config.workers,
            spool_dir=config.spool_dir)
        self.handler = StoreHandler(
            Node.STAGE1, self.sessions, config.spool_dir, settings.quarantine_dir,
            self.keyring.subkey("pseudonym"), self._new_study_uid, self.service.receive)
        self.ae = make_scp_ae(
            self.listen.ae_title, allowed_callers=config.allowed_callers,
            sop_classes=config.sop_classes,
            transfer_syntaxes=effective_transfer_syntaxes(config.transfer_syntaxes),
            max_associations=config.max_associations, acse_timeout=config.acse_timeout,
            dimse_timeout=config.dimse_timeout, network_timeout=config.network_timeout)
        self._stop = threading.Event()
        self._server: Any = None

    def _new_study_uid(self, ds: pydicom.Dataset) -> str:
        return self.uid_mapper.remap_uid(str(ds.get("StudyInstanceUID", "")))

    def start(self) -> None:
        """Start workers and the SCP (non-blocking)."""
        config = self.settings.stage1
        sweep_leftovers(self.sessions, config.spool_dir, config.store_dir)
        self.service.start()
        handlers = [(evt.EVT_C_STORE, self.handler), (evt.EVT_C_ECHO, handle_echo),
                    (evt.EVT_CONN_OPEN, set_nodelay)]
        self._server = self.ae.start_server((self.listen.bind, self.listen.port), block=False,
                                            evt_handlers=handlers)
        self._housekeeper = threading.Thread(target=self._housekeeping, daemon=True,
                                             name="stage1-housekeeping")
        self._housekeeper.start()
        LOG.info("stage1.listening", ae_title=self.listen.ae_title, bind=self.listen.bind,
                 port=self.listen.port, policy=self.settings.stage1.policy)

    def _housekeeping(self) -> None:
        started = datetime.now(UTC)
        while not self._stop.wait(1.0):
            try:
                self._beat(started)
                complete_quiet_studies(self.sessions, self.settings.stage1.quiet_period_seconds)
            except Exception as exc:  # never let housekeeping kill the node
                LOG.error("stage1.housekeeping_failed", error=type(exc).__name__)

    def _beat(self, started: datetime) -> None:
        with self.sessions.begin() as session:
            beat = session.get(Heartbeat, Node.STAGE1)
            now = datetime.now(UTC)
            if beat is None:
                beat = Heartbeat(node=Node.STAGE1, pid=os.getpid(), host=socket.gethostname(),
                                 started_at=started)
                session.add(beat)
            beat.pid, beat.beat_at = os.getpid(), now
            beat.ae_title, beat.port = self.listen.ae_title, self.listen.port

    def stop(self, timeout: float = 60) -> None:
        """Stop accepting, let open associations finish, drain the queue."""
        self._stop.set()
        if self._server is not None:
            # Closes the listening socket only; associations in progress run to their end.
            self._server.shutdown()
            self._server = None
            deadline = time.monotonic() + timeout
            while self.ae.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
        self.handler.close()
        self.service.stop(timeout)
        self.db.dispose()
        LOG.info("stage1.stopped")

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT; returns 0 after a graceful stop."""
        stopping = threading.Event()

        def _signal(signum: int, _frame: Any) -> None:
            stopping.set()

        previous = {sig: signal.signal(sig, _signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            stopping.wait()
            LOG.info("stage1.stopping")
            self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

"""Wiring for the stage-1 node: settings → database, key ring, SCP, worker pool, housekeeping.

``Stage1Node.serve()`` runs until SIGTERM or SIGINT, then stops accepting associations, lets the
ones in progress finish, drains the worker queue and returns (exit status 0).
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from appliance.db import open_database, session_factory
from appliance.dimse import parse_callers, scp_contexts
from appliance.durable import make_dirs
from appliance.heartbeat import NodeHeartbeat
from appliance.keys import KeyRing
from appliance.logging import get_logger
from appliance.models import Node
from appliance.nodelock import NodeLock
from appliance.settings import Settings, effective_transfer_syntaxes
from appliance.streaming_scp import ScpOptions, StreamingScp
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
        self.db = open_database(settings.db_url)
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
            self.keyring.subkey("pseudonym"), self._new_study_uid, self.service.record)
        self.scp = StreamingScp(ScpOptions(
            self.listen.ae_title,
            scp_contexts(config.sop_classes, effective_transfer_syntaxes(config.transfer_syntaxes)),
            allowed_callers=parse_callers(config.allowed_callers),
            max_associations=config.max_associations, acse_timeout=config.acse_timeout,
            network_timeout=config.network_timeout, dimse_timeout=config.dimse_timeout),
            self.handler)
        self._stop = threading.Event()
        self._serving = False
        # Beats every second: finish_pending() trusts a heartbeat younger than 5 s.
        self.lock = NodeLock(settings.work_dir, "stage1")
        self.heartbeat = NodeHeartbeat(self.sessions, Node.STAGE1, ae_title=self.listen.ae_title,
                                       port=self.listen.port, interval=1.0)

    def _new_study_uid(self, study_instance_uid: str) -> str:
        return self.uid_mapper.remap_uid(study_instance_uid)

    def start(self) -> None:
        """Start workers and the SCP (non-blocking), once per working folder (NodeLock)."""
        self.lock.acquire()
        try:
            self._start()
        except BaseException:
            self.stop(timeout=5)  # what did start stops again; releases the lock
            raise

    def _start(self) -> None:
        config = self.settings.stage1
        sweep_leftovers(self.sessions, config.spool_dir, config.store_dir)
        self.service.start()
        self.heartbeat.start()
        self.scp.start(self.listen.bind, self.listen.port)
        self._serving = True
        self._housekeeper = threading.Thread(target=self._housekeeping, daemon=True,
                                             name="stage1-housekeeping")
        self._housekeeper.start()
        LOG.info("stage1.listening", ae_title=self.listen.ae_title, bind=self.listen.bind,
                 port=self.listen.port, policy=self.settings.stage1.policy)

    def _housekeeping(self) -> None:
        while not self._stop.wait(1.0):
            try:
                complete_quiet_studies(self.sessions, self.settings.stage1.quiet_period_seconds)
            except Exception as exc:  # never let housekeeping kill the node
                LOG.error("stage1.housekeeping_failed", error=type(exc).__name__)

    def stop(self, timeout: float = 60) -> None:
        """Stop accepting, let open associations finish, drain the queue."""
        self._stop.set()
        if self._serving:
            # Closes the listening socket only; associations in progress run to their end.
            self.scp.shutdown()
            self._serving = False
            deadline = time.monotonic() + timeout
            while self.scp.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
        self.handler.close()
        self.service.stop(timeout)
        self.heartbeat.stop()
        self.db.dispose()
        self.lock.release()
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

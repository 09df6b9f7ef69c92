"""Wiring for the Receiver: settings → database, store, SCP, heartbeat.

``ReceiverNode.serve()`` runs until SIGTERM or SIGINT, then stops accepting associations, lets
the ones in progress finish and returns 0. The Receiver holds no key ring: it stores anonymized
data as received and never derives anything from it.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from appliance.db import open_database, session_factory
from appliance.dimse import make_scp_ae
from appliance.durable import make_dirs
from appliance.heartbeat import NodeHeartbeat
from appliance.logging import get_logger
from appliance.nodelock import NodeLock
from appliance.settings import Settings, effective_transfer_syntaxes
from receiver.handlers import NODE, AssociationLog, StoreHandler, handler_table
from receiver.storage import sweep_temporary

LOG = get_logger("tce.receiver")


@dataclass(frozen=True)
class Listen:
    """Where the SCP answers; ``tce receiver serve`` options override the configuration."""

    ae_title: str
    bind: str
    port: int


class ReceiverNode:
    """The Receiver's C-STORE/C-ECHO SCP and its housekeeping, built from settings."""

    def __init__(self, settings: Settings, listen: Listen | None = None) -> None:
        config = settings.receiver
        self.settings = settings
        self.listen = listen or Listen(config.ae_title, config.bind, config.port)
        for folder in (config.store_dir, settings.quarantine_dir):
            make_dirs(folder)
        self.db = open_database(settings.db_url)
        self.sessions = session_factory(self.db)
        self.associations = AssociationLog()
        self.handler = StoreHandler(self.sessions, config.store_dir, settings.quarantine_dir,
                                    self.associations)
        self.ae = make_scp_ae(
            self.listen.ae_title, allowed_callers=config.allowed_callers,
            sop_classes=config.sop_classes,
            transfer_syntaxes=effective_transfer_syntaxes(config.transfer_syntaxes),
            max_associations=config.max_associations, acse_timeout=config.acse_timeout,
            dimse_timeout=config.dimse_timeout, network_timeout=config.network_timeout)
        self._server: Any = None
        self.lock = NodeLock(settings.work_dir, "receiver")
        self.heartbeat = NodeHeartbeat(self.sessions, NODE, ae_title=self.listen.ae_title,
                                       port=self.listen.port)

    def start(self) -> None:
        """Start the SCP (non-blocking); the heartbeat row is written before it listens."""
        self.lock.acquire()  # before anything touches the store or the heartbeat row
        swept = sweep_temporary(self.settings.receiver.store_dir)
        if swept:
            LOG.warning("receiver.swept_temporary", files=swept)
        self.heartbeat.start()
        try:
            self._server = self.ae.start_server((self.listen.bind, self.listen.port),
                                                block=False,
                                                evt_handlers=handler_table(self.handler))
        except BaseException:
            self.heartbeat.stop()
            self.lock.release()
            raise
        LOG.info("receiver.listening", ae_title=self.listen.ae_title, bind=self.listen.bind,
                 port=self.listen.port, store=str(self.settings.receiver.store_dir))

    def stop(self, timeout: float = 60) -> None:
        """Stop accepting, let open associations finish (up to ``timeout`` seconds)."""
        if self._server is not None:
            # Closes the listening socket only; associations in progress run to their end.
            self._server.shutdown()
            self._server = None
            deadline = time.monotonic() + timeout
            while self.ae.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.ae.active_associations:
                LOG.warning("receiver.associations_cut", count=len(self.ae.active_associations))
        self.heartbeat.stop()
        self.db.dispose()
        self.lock.release()
        LOG.info("receiver.stopped")

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT; returns 0 after a graceful stop."""
        stopping = threading.Event()

        def _signal(signum: int, _frame: Any) -> None:
            stopping.set()

        previous = {sig: signal.signal(sig, _signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            stopping.wait()
            LOG.info("receiver.stopping")
            self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

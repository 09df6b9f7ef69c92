"""Stage 2's Verification SCP: it answers C-ECHO and nothing else.

Studies reach stage 2 only on PDI media; the media are the one way between the two stages, so
stage 2 must have no network input for data. It still needs to show that it answers, the way
stage 1 and the Receiver do, for ``tce status --echo`` and the container healthcheck. So its AE
supports the Verification SOP Class (1.2.840.10008.1.1) only:

* A C-ECHO gets status 0x0000.
* An association that proposes storage (or any other SOP class) is not rejected as a whole:
  ACSE accepts it and answers every such presentation context with result 3, "abstract-syntax-
  not-supported" (PS3.8 9.3.3.2), so the requestor has no context to send a dataset on
  (dcmtk ``storescu``: "No presentation context"). Nothing is ever received or stored.
* Calling AE titles are checked against ``stage2.allowed_callers`` with the same ``AE`` /
  ``AE@host`` rules as stage 1 and the Receiver (empty: any caller may echo); a caller not on
  the list gets A-ASSOCIATE-RJ "calling AE title not recognised".

The called AE title is ``stage2.ae_title``, the same title stage 2 calls the Receiver with: one
node, one AE title. Logs carry AE titles, peer addresses, counts and SOP Class UIDs only.
"""

from __future__ import annotations

import time
from typing import Any

from pynetdicom import evt

from appliance.dimse import (
    VERIFICATION_SOP_CLASS,
    AllowListAE,
    handle_echo,
    parse_callers,
    quiet_identifiers,
)
from appliance.logging import get_logger
from appliance.settings import Stage2Settings

LOG = get_logger("tce.stage2.echo")
MAX_ASSOCIATIONS = 4  # monitors and healthchecks; each association lasts a round trip


def _caller(event: evt.Event) -> dict[str, Any]:
    requestor = event.assoc.requestor
    return {"calling_ae": requestor.ae_title, "peer": requestor.address}


def _accepted(event: evt.Event) -> None:
    assoc = event.assoc
    if assoc.accepted_contexts:
        LOG.info("stage2.association_accepted", **_caller(event),
                 contexts=len(assoc.accepted_contexts),
                 rejected_contexts=len(assoc.rejected_contexts))
        return
    refused = sorted({str(cx.abstract_syntax) for cx in assoc.rejected_contexts})
    LOG.warning("stage2.association_refused", **_caller(event),
                reason="no presentation context accepted: stage 2 answers C-ECHO only",
                rejected_contexts=len(assoc.rejected_contexts), sop_classes=refused[:8])


def _rejected(event: evt.Event) -> None:
    LOG.warning("stage2.association_rejected", **_caller(event),
                reason="calling AE title not allowed (stage2.allowed_callers)")


def _aborted(event: evt.Event) -> None:
    LOG.info("stage2.association_aborted", **_caller(event))


def _echo(event: evt.Event) -> int:
    LOG.debug("stage2.echo", **_caller(event))
    return handle_echo(event)


HANDLERS: list[evt.EventHandlerType] = [
    (evt.EVT_ACCEPTED, _accepted), (evt.EVT_REJECTED, _rejected), (evt.EVT_ABORTED, _aborted),
    (evt.EVT_C_ECHO, _echo)]


class EchoSCP:
    """The Verification-only SCP of ``stage2``: start() listens (non-blocking), stop() ends it."""

    def __init__(self, config: Stage2Settings) -> None:
        quiet_identifiers()
        self.ae_title, self.bind, self.port = config.ae_title, config.bind, config.port
        ae = AllowListAE(ae_title=config.ae_title)
        ae.add_supported_context(VERIFICATION_SOP_CLASS)
        ae.maximum_associations = MAX_ASSOCIATIONS
        ae.acse_timeout = config.acse_timeout
        ae.dimse_timeout = config.dimse_timeout
        ae.network_timeout = config.network_timeout
        ae.set_allowed_callers(parse_callers(config.allowed_callers))
        self.ae = ae
        self._server: Any = None

    def start(self) -> None:
        """Listen on ``bind:port``; raises OSError naming it when it cannot be bound."""
        try:
            self._server = self.ae.start_server((self.bind, self.port), block=False,
                                                evt_handlers=HANDLERS)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {self.bind}:{self.port} for C-ECHO:"
                                     f" {exc.strerror or exc}") from exc
        LOG.info("stage2.listening", ae_title=self.ae_title, bind=self.bind, port=self.port,
                 sop_classes=[VERIFICATION_SOP_CLASS])

    def stop(self, timeout: float = 10) -> None:
        """Close the listening socket, let an echo in flight finish (``timeout`` seconds in all),
        then abort what is left: a slow monitor must not hold up the node's shutdown."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server = None
        deadline = time.monotonic() + timeout
        for assoc in self.ae.active_associations:
            assoc.join(max(0.0, deadline - time.monotonic()))
        left = self.ae.active_associations
        for assoc in left:
            assoc.abort()
        if left:
            LOG.warning("stage2.associations_cut", count=len(left))

"""pynetdicom plumbing shared by the SCPs (stage 1, Receiver) and the SCU (stage 2).

* :func:`make_scp_ae` builds an Application Entity from settings: storage contexts for the
  accepted SOP classes and transfer syntaxes, Verification, timeouts, a large maximum PDU (fewer,
  bigger PDUs are most of the receive throughput) and the calling-AE allow-list.
* The allow-list may name hosts (``AE@host``). pynetdicom only checks titles, against
  ``require_calling_aet``, during negotiation on the association's own thread; :class:`_AllowList`
  answers that lookup per association, so an unknown (AE, host) pair is rejected with the
  standard A-ASSOCIATE-RJ reason "calling AE title not recognised" (rejected-permanent, service
  user, reason 3).
* :data:`Status` names the DIMSE statuses the handlers return.
* :class:`HeldReactorAE` and :func:`hold_reactor` work around a race in pynetdicom's requestor
  (used by stage 2's SCU and the demo's sender). ``send_c_store`` pauses the association's
  reactor thread by clearing an Event and polling a flag that can still be stale from the
  previous call; the reactor may then take the C-STORE-RSP off the queue itself ("Received
  unexpected C-STORE service message"), and the SCU waits out the DIMSE timeout and gets an
  empty status. With four parallel associations that lost 232 of 2,000 instances in one run
  (``stage2_export_manager.cstore``). An association that only ever issues C-STOREs needs no
  reactor between them, so it is paused once, for as long as the association is used, with a
  :class:`HeldCheckpoint` that ``send_c_store`` cannot re-open.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, StoragePresentationContexts, _config, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
MAX_PDU = 4 * 1024 * 1024  # what we accept per P-DATA PDU; dcmtk then sends its maximum


class Status(IntEnum):
    """C-STORE / C-ECHO statuses (PS3.4 Annex B, PS3.7 Annex C)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    CANNOT_UNDERSTAND_DECODE = 0xC210  # as pynetdicom's own apps use for undecodable data
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    PROCESSING_FAILURE = 0x0110


@dataclass(frozen=True)
class CallerRule:
    ae_title: str
    host: str | None  # None: any host


def parse_callers(entries: Iterable[str]) -> list[CallerRule]:
    """``["MODALITY", "PACS@10.0.0.5"]`` → rules; host names are resolved once, here."""
    rules = []
    for entry in entries:
        title, _, host = entry.partition("@")
        resolved = None
        if host:
            try:
                resolved = socket.gethostbyname(host)
            except OSError:
                resolved = host
        rules.append(CallerRule(title.strip(), resolved))
    return rules


class _AllowList(list[str]):
    """``require_calling_aet`` whose contents depend on the association asking.

    pynetdicom reads the attribute on the acceptor's thread, which is the Association itself, so
    the peer address is known: the list holds the titles allowed from that host only.
    """

    def __init__(self, rules: Sequence[CallerRule]) -> None:
        super().__init__([rule.ae_title for rule in rules] or [])
        self._rules = list(rules)

    def _for_current(self) -> list[str]:
        thread = threading.current_thread()
        address = None
        if isinstance(thread, Association):
            address = thread.requestor.address
        titles = [r.ae_title for r in self._rules if r.host is None or r.host == address]
        return titles or ["\x00no caller allowed from this host"]

    def __iter__(self) -> Any:
        return iter(self._for_current())

    def __contains__(self, item: object) -> bool:
        return item in self._for_current()

    def __bool__(self) -> bool:
        return bool(self._rules)


class AllowListAE(AE):
    """An AE whose calling-AE allow-list may be restricted by host."""

    _allow: _AllowList | None = None

    def set_allowed_callers(self, rules: Sequence[CallerRule]) -> None:
        self._allow = _AllowList(rules)

    @property
    def require_calling_aet(self) -> list[str]:
        allow = getattr(self, "_allow", None)
        return allow if allow is not None else []

    @require_calling_aet.setter
    def require_calling_aet(self, value: list[str]) -> None:
        self._allow = _AllowList([CallerRule(v, None) for v in value]) if value else None


def storage_contexts(sop_classes: Sequence[str],
                     transfer_syntaxes: Sequence[str]) -> list[PresentationContext]:
    """SCP contexts: every storage SOP class (or the configured ones) with the given syntaxes."""
    wanted = set(sop_classes)
    contexts = []
    for base in StoragePresentationContexts:
        if wanted and base.abstract_syntax not in wanted:
            continue
        context = PresentationContext()
        context.abstract_syntax = base.abstract_syntax
        context.transfer_syntax = list(transfer_syntaxes)
        contexts.append(context)
    known = {c.abstract_syntax for c in contexts}
    for uid in sop_classes:  # private or newer SOP classes named in the config
        if uid not in known:
            context = PresentationContext()
            context.abstract_syntax = uid
            context.transfer_syntax = list(transfer_syntaxes)
            contexts.append(context)
    return contexts


def scp_contexts(sop_classes: Sequence[str],
                 transfer_syntaxes: Sequence[str]) -> list[PresentationContext]:
    """Every context an SCP of this appliance accepts: storage, and Verification with
    pynetdicom's default transfer syntaxes (as :func:`make_scp_ae` adds it)."""
    verification = PresentationContext()
    verification.abstract_syntax = VERIFICATION_SOP_CLASS
    verification.transfer_syntax = list(DEFAULT_TRANSFER_SYNTAXES)
    return [*storage_contexts(sop_classes, transfer_syntaxes), verification]


def quiet_identifiers() -> None:
    """pynetdicom logs request identifiers (PHI) by default: never."""
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


def make_scp_ae(
    ae_title: str,
    *,
    allowed_callers: Iterable[str],
    sop_classes: Sequence[str],
    transfer_syntaxes: Sequence[str],
    max_associations: int,
    acse_timeout: float,
    dimse_timeout: float,
    network_timeout: float,
) -> AllowListAE:
    """A storage + verification SCP configured from settings (not started)."""
    quiet_identifiers()
    ae = AllowListAE(ae_title=ae_title)
    for context in storage_contexts(sop_classes, transfer_syntaxes):
        assert context.abstract_syntax is not None
        ae.add_supported_context(context.abstract_syntax, context.transfer_syntax)
    ae.add_supported_context(VERIFICATION_SOP_CLASS)
    ae.maximum_associations = max_associations
    ae.maximum_pdu_size = MAX_PDU
    ae.acse_timeout = acse_timeout
    ae.dimse_timeout = dimse_timeout
    ae.network_timeout = network_timeout
    ae.set_allowed_callers(parse_callers(allowed_callers))
    return ae


def handle_echo(event: evt.Event) -> int:
    """C-ECHO: the node is up and answering."""
    return int(Status.SUCCESS)


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN: disable Nagle, so small DIMSE responses are not held for delayed ACKs."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class HeldCheckpoint(threading.Event):
    """The association reactor's pause Event, which cannot be re-opened while held."""

    def __init__(self) -> None:
        super().__init__()
        self._held = False
        super().set()

    def hold(self) -> None:
        self._held = True
        self.clear()

    def set(self) -> None:
        if not self._held:
            super().set()

    def release(self) -> None:
        self._held = False
        super().set()


class HeldReactorAE(AE):
    """An AE whose requestor associations get a :class:`HeldCheckpoint` before they start.

    ``_create_socket`` is the one hook pynetdicom calls between building a requestor
    Association and starting its threads.
    """

    def _create_socket(self, assoc: Any, address: Any, tls_args: Any) -> Any:
        assoc._reactor_checkpoint = HeldCheckpoint()
        return super()._create_socket(assoc, address, tls_args)


def hold_reactor(assoc: Any, timeout: float = 2.0) -> None:
    """Pause the requestor reactor for good; returns once it is blocked (or the timeout ends).

    After ``hold()`` the reactor finishes at most the iteration it is in (a 1 ms sleep), then
    blocks; waiting a few iterations before trusting ``_is_paused`` rules out a stale True.
    """
    assoc._reactor_checkpoint.hold()
    time.sleep(0.005)
    deadline = time.monotonic() + timeout
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.0005)


def release_reactor(assoc: Any) -> None:
    """Let the reactor run again (it must, for the release or abort that ends the association)."""
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if isinstance(checkpoint, HeldCheckpoint):
        checkpoint.release()

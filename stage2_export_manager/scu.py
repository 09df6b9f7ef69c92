"""C-STORE SCU for stage 2: send one study's staged files to the Receiver, losing nothing.

A default pynetdicom SCU measured 0.06 of dcmtk ``storescu``'s rate on this machine and, with four
parallel associations, once lost 47 of 2,000 instances. What we found (the figures are in
``benchmarks/stage2_export.py``'s diagnosis):

* **Nagle and delayed ACK.** The tail of a C-STORE is a small segment that Nagle's algorithm
  holds until the peer ACKs the previous one, and the peer delays that ACK by up to 40 ms.
  TCP_NODELAY is set on the socket when it opens (:func:`appliance.dimse.set_nodelay`).
* **Re-encoding.** ``send_c_store(dataset)`` encodes the whole dataset again in Python; the
  staged file already is the encoding, so its data set is streamed from disk in PDU-sized
  fragments, never decoded. We accept PDUs up to :data:`appliance.dimse.MAX_PDU`; what we send
  is cut to the peer's maximum (storescp allows at most 128 KiB, our Receiver 4 MiB).
* **Polling and per-message overhead in pynetdicom**, and **the lost instances: a race in its
  requestor reactor** that takes C-STORE responses meant for ``send_c_store``. See
  :mod:`.cstore` for both and what replaces them.

Whatever the peer does, nothing counts as sent without a success status (0x0000, or the warnings
0xB000, 0xB006, 0xB007) in a C-STORE-RSP for that very message: no response (abort, dropped
connection, DIMSE timeout) ends the association with :class:`AssociationFailed`, and the
instance stays unsent for the next attempt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.presentation import PresentationContext, build_context

from appliance.dimse import MAX_PDU, hold_reactor, quiet_identifiers, release_reactor, set_nodelay
from stage2_export_manager.cstore import StreamingAE, c_store

MAX_CONTEXTS = 128  # presentation contexts per association (odd context ids 1..255)
SUCCESS_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
NOT_ACCEPTED = "SOP class not accepted by the Receiver"


@dataclass(frozen=True)
class Peer:
    """A DICOM peer: called AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_peer(text: str) -> Peer:
    """``"AE@HOST:PORT"`` → :class:`Peer`; ValueError with what is wrong and an example."""
    example = "write AE@HOST:PORT, e.g. TCE_RECEIVER@10.0.0.7:11114"
    ae, at, rest = text.strip().rpartition("@")
    if not at or not ae:
        raise ValueError(f"{text!r} names no AE title; {example}")
    host, colon, port_text = rest.rpartition(":")
    if not colon or not host:
        raise ValueError(f"{text!r} names no host and port; {example}")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:104
    if not 1 <= len(ae) <= 16 or "\\" in ae or not ae.isascii() or not ae.strip():
        raise ValueError(f"AE title {ae!r} must be 1 to 16 ASCII characters; {example}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} must be a number in 1..65535; {example}")
    return Peer(ae, host, int(port_text))


@dataclass(frozen=True)
class StoreItem:
    """One staged Part 10 file to send; ``key`` is the caller's (a JobInstance id)."""

    key: int
    path: Path
    sop_class_uid: str
    transfer_syntax_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class StoreResult:
    """What became of one item: sent, or failed for good (``permanent``) with a PHI-free reason."""

    key: int
    sent: bool
    status: int | None
    reason: str = ""


class AssociationFailed(Exception):
    """The Receiver refused, could not be reached, aborted, or stopped answering.

    Items sent before it happened have their results already; the rest were not sent and are
    worth retrying later. ``str()`` says what happened without any patient value.
    """


@dataclass(frozen=True)
class Timeouts:
    acse: float = 30
    dimse: float = 60
    network: float = 60


def status_reason(status: int) -> str:
    """A short reason for a non-success C-STORE status (PS3.4 Annex B.2.3)."""
    if status >> 8 == 0xA7:
        meaning = "out of resources"
    elif status >> 8 == 0xA9:
        meaning = "data set does not match SOP class"
    elif status >> 12 == 0xC:
        meaning = "cannot understand"
    elif status == 0x0122:
        meaning = "SOP class not supported"
    elif status == 0x0110:
        meaning = "processing failure"
    else:
        meaning = "refused"
    return f"Receiver answered 0x{status:04X} ({meaning})"


def _contexts(items: Iterable[StoreItem]) -> list[PresentationContext]:
    pairs = dict.fromkeys((i.sop_class_uid, i.transfer_syntax_uid) for i in items)
    return [build_context(sop_class, [syntax]) for sop_class, syntax in pairs]


def _batches(items: Sequence[StoreItem]) -> list[list[StoreItem]]:
    """Items grouped so that each group needs at most :data:`MAX_CONTEXTS` contexts."""
    batches: list[list[StoreItem]] = []
    pairs: set[tuple[str, str]] = set()
    for item in items:
        pair = (item.sop_class_uid, item.transfer_syntax_uid)
        if not batches or (pair not in pairs and len(pairs) == MAX_CONTEXTS):
            batches.append([])
            pairs = set()
        pairs.add(pair)
        batches[-1].append(item)
    return batches


def _describe_context(sop_class: str, syntax: str) -> str:
    return f"{UID(sop_class).name or sop_class} in {UID(syntax).name or syntax}"


# --- sending ------------------------------------------------------------------------------


def send_study(peer: Peer, calling_ae: str, items: Sequence[StoreItem],
               on_result: Callable[[StoreResult], None], *, timeouts: Timeouts | None = None,
               stop: threading.Event | None = None) -> None:
    """Send ``items`` (one study) to ``peer``: one association, or one per 128 contexts.

    ``on_result`` is called once per item that was decided, in order: sent, or failed for good
    (context not accepted, failure status). Raises :class:`AssociationFailed` when the peer
    refuses, cannot be reached, aborts or stops answering; items without a result then are not
    sent. A set ``stop`` Event ends the sending between two instances (without an exception).
    """
    quiet_identifiers()
    timeouts = timeouts or Timeouts()
    for batch in _batches(items):
        if stop is not None and stop.is_set():
            return
        _send_batch(peer, calling_ae, batch, on_result, timeouts, stop)


def _make_ae(calling_ae: str, timeouts: Timeouts) -> StreamingAE:
    ae = StreamingAE(ae_title=calling_ae)
    ae.maximum_pdu_size = MAX_PDU
    ae.acse_timeout = timeouts.acse
    ae.dimse_timeout = timeouts.dimse
    ae.network_timeout = timeouts.network
    ae.connection_timeout = timeouts.acse
    return ae


def _send_batch(peer: Peer, calling_ae: str, items: Sequence[StoreItem],
                on_result: Callable[[StoreResult], None], timeouts: Timeouts,
                stop: threading.Event | None) -> None:
    ae = _make_ae(calling_ae, timeouts)
    rejection: list[str] = []
    opened: list[bool] = []

    def on_open(event: evt.Event) -> None:
        opened.append(True)
        set_nodelay(event)

    def on_acse_recv(event: evt.Event) -> None:
        primitive = getattr(event, "primitive", None)
        if primitive is not None and getattr(primitive, "result", None) in (0x01, 0x02):
            rejection.append(f"{primitive.result_str}, {primitive.source_str}:"
                             f" {primitive.reason_str}")

    try:
        assoc = ae.associate(peer.host, peer.port, contexts=_contexts(items),
                             ae_title=peer.ae_title,
                             evt_handlers=[(evt.EVT_CONN_OPEN, on_open),
                                           (evt.EVT_ACSE_RECV, on_acse_recv)])
    except (OSError, RuntimeError, ValueError) as exc:
        raise AssociationFailed(f"cannot associate with {peer}: {exc}") from None
    if not assoc.is_established:
        if not opened:
            raise AssociationFailed(f"the Receiver {peer} is not reachable (connection refused"
                                    " or timed out)")
        if assoc.rejected_contexts and not assoc.accepted_contexts and not rejection:
            for item in items:  # the peer accepted the association but none of our contexts
                on_result(StoreResult(item.key, False, None, _not_accepted(item)))
            return
        if rejection:
            raise AssociationFailed(f"{peer} rejected the association ({rejection[0]})")
        raise AssociationFailed(f"{peer} aborted the association request or did not answer"
                                " it in time")
    try:
        hold_reactor(assoc)
        accepted = {(str(c.abstract_syntax), str(c.transfer_syntax[0])): int(c.context_id or 0)
                    for c in assoc.accepted_contexts}
        for number, item in enumerate(items, 1):
            if stop is not None and stop.is_set():
                break
            context_id = accepted.get((item.sop_class_uid, item.transfer_syntax_uid))
            if context_id is None:
                on_result(StoreResult(item.key, False, None, _not_accepted(item)))
                continue
            on_result(_store(assoc, context_id, number % 0x10000 or 1, item, peer))
    except BaseException:
        release_reactor(assoc)
        if assoc.is_established:
            assoc.abort()
        raise
    release_reactor(assoc)
    assoc.release()


def _not_accepted(item: StoreItem) -> str:
    return (f"{NOT_ACCEPTED}"
            f" ({_describe_context(item.sop_class_uid, item.transfer_syntax_uid)})")


def _store(assoc: Any, context_id: int, message_id: int, item: StoreItem,
           peer: Peer) -> StoreResult:
    """One C-STORE. No response, or one to another message, is AssociationFailed."""
    if not assoc.is_established:
        raise AssociationFailed(f"{peer} ended the association during the transfer")
    try:
        response = c_store(assoc, context_id, message_id, item.path, item.sop_class_uid,
                           item.sop_instance_uid)
    except OSError as exc:  # the staged file vanished: restaged on the next attempt
        raise AssociationFailed(f"cannot read a staged file ({exc.strerror or exc})") from None
    status = getattr(response, "Status", None)
    if response is None or status is None:
        raise AssociationFailed(f"no C-STORE response from {peer} (association aborted, or"
                                " the DIMSE timeout expired)")
    if getattr(response, "MessageIDBeingRespondedTo", message_id) != message_id:
        raise AssociationFailed(f"{peer} answered another C-STORE than the one sent")
    code = int(status)
    if code in SUCCESS_STATUSES:
        return StoreResult(item.key, True, code)
    return StoreResult(item.key, False, code, status_reason(code))

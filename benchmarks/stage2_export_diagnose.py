"""The stage-2 benchmark's ``--diagnose``: why a stock pynetdicom SCU was slower than storescu.

Split out of ``benchmarks/stage2_export.py``. It sends the staged files over one association
with a ladder of SCU configurations (pynetdicom defaults, then TCP_NODELAY, then the file
streamed, then the event-driven DUL and held reactor, then this project's SCU), and runs
pynetdicom's own ``send_c_store`` on four parallel associations, counting what did not arrive.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from stage2_export_peers import RECEIVER, Storescp, check_once
from stage2_export_runs import storescu


def _stock_send(files: list[Path], port: int, *, nodelay: bool, chunked: bool,
                results: list[str] | None = None, dimse_timeout: float = 30) -> None:
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import AE, _config, evt

    from appliance.dimse import set_nodelay

    _config.STORE_SEND_CHUNKED_DATASET = chunked
    ae = AE(ae_title="TCE_STAGE2")
    ae.dimse_timeout = dimse_timeout
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, set_nodelay)] if nodelay else []
    assoc = ae.associate("127.0.0.1", port, ae_title=RECEIVER, evt_handlers=handlers)
    for path in files:
        try:
            status = assoc.send_c_store(path)
        except RuntimeError:
            outcome = "raised (association gone)"
        else:
            outcome = ("no status" if "Status" not in status
                       else "ok" if status.Status == 0 else "failure status")
        if results is not None:
            results.append(outcome)
    if assoc.is_established:
        assoc.release()


def _held_send_c_store(files: list[Path], port: int) -> None:
    """This project's DUL and held reactor, but pynetdicom's send_c_store(path) per instance."""
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import _config, evt
    from pynetdicom.dimse import DIMSEServiceProvider

    from appliance.dimse import hold_reactor, release_reactor, set_nodelay
    from stage2_export_manager.cstore import StreamingAE

    class PlainDIMSEAE(StreamingAE):
        def _create_socket(self, assoc: Any, address: Any, tls_args: Any) -> Any:
            sock = super()._create_socket(assoc, address, tls_args)
            assoc.dimse = DIMSEServiceProvider(assoc)
            return sock

    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = PlainDIMSEAE(ae_title="TCE_STAGE2")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=RECEIVER,
                         evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])
    hold_reactor(assoc)
    for path in files:
        assoc.send_c_store(path)
    release_reactor(assoc)
    assoc.release()


def _project_send(files: list[Path], port: int, results: list[str] | None = None) -> None:
    from pydicom.filereader import read_file_meta_info

    from stage2_export_manager.scu import Peer, StoreItem, send_study

    items = []
    for n, path in enumerate(files):
        meta = read_file_meta_info(path)
        items.append(StoreItem(n, path, str(meta.MediaStorageSOPClassUID),
                               str(meta.TransferSyntaxUID),
                               str(meta.MediaStorageSOPInstanceUID)))
    sink: list[Any] = []
    try:
        send_study(Peer(RECEIVER, "127.0.0.1", port), "TCE_STAGE2", items, sink.append)
    finally:
        if results is not None:
            results.extend("ok" if r.sent else "failure status" for r in sink)


def diagnose(files: list[list[Path]], count: int, pdus: list[int],
             scratch: Path) -> dict[str, Any]:
    from pydicom.filereader import read_file_meta_info

    one = [p for group in files for p in group][:count]
    expected = {str(read_file_meta_info(p).MediaStorageSOPInstanceUID) for p in one}
    ladder: list[tuple[str, Any]] = [
        ("pynetdicom defaults (Nagle on, dataset re-encoded)",
         lambda port: _stock_send(one, port, nodelay=False, chunked=False)),
        ("+ TCP_NODELAY", lambda port: _stock_send(one, port, nodelay=True, chunked=False)),
        ("+ file streamed, not re-encoded",
         lambda port: _stock_send(one, port, nodelay=True, chunked=True)),
        ("+ event-driven DUL, reactor held", lambda port: _held_send_c_store(one, port)),
        ("+ command set packed, responses read with struct (scu.send_study)",
         lambda port: _project_send(one, port)),
    ]
    report: dict[str, Any] = {}
    for pdu in pdus:
        rows = []
        base_seconds, received = storescu([one], pdu, scratch)
        check_once(received, expected, "storescu")
        rows.append({"name": "storescu (dcmtk)", "instances_per_second": count / base_seconds})
        for name, run in ladder:
            scp = Storescp(scratch / "rx", pdu)
            try:
                started = time.perf_counter()
                run(scp.port)
                seconds = time.perf_counter() - started
                received = scp.received()
            finally:
                scp.close()
            if name.endswith("(scu.send_study)"):
                check_once(received, expected, name)
            rate = count / seconds
            rows.append({"name": name, "instances_per_second": rate,
                         "ratio_to_storescu": rate * base_seconds / count,
                         "lost": len(expected - set(received)),
                         "received_twice": sum(1 for n in received.values() if n > 1)})
        report[f"one_association_storescp_pdu_{pdu}"] = rows
    report["four_associations"] = race(files, pdus[-1], scratch)
    return report


def race(files: list[list[Path]], pdu: int, scratch: Path) -> list[dict[str, Any]]:
    """pynetdicom's send_c_store on four parallel associations, then this project's SCU."""
    out = []
    for name, sender in (("pynetdicom send_c_store (streamed, TCP_NODELAY, DIMSE timeout 5 s)",
                          lambda group, port, res: _stock_send(group, port, nodelay=True,
                                                               chunked=True, results=res,
                                                               dimse_timeout=5)),
                         ("stage2_export_manager.scu.send_study",
                          lambda group, port, res: _project_send(group, port, res))):
        scp = Storescp(scratch / "rx", pdu)
        results: list[list[str]] = [[] for _ in files]
        try:
            threads = [threading.Thread(target=sender, args=(group, scp.port, results[n]))
                       for n, group in enumerate(files)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            received = scp.received()
        finally:
            scp.close()
        outcomes = Counter(o for r in results for o in r)
        out.append({"name": name, "outcomes": dict(outcomes),
                    "arrived": len(received), "of": sum(len(g) for g in files)})
    return out

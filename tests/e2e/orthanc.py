"""A real Orthanc server (Debian's ``orthanc`` package) as a throwaway test peer.

Orthanc runs from a JSON configuration written into the test's temporary folder: its storage
and index live there, the DICOM and HTTP ports are free loopback ports, no plugins are loaded
(the Debian package's own configuration and plugins are never read), remote access and
authentication are off, and ``--no-jobs`` stops it from resuming jobs of an earlier run. It is
ready when ``GET /system`` answers and a C-ECHO succeeds; it is stopped with SIGTERM.

Where the binary is missing the tests skip with the reason, except in CI (env ``CI`` set), where
``scripts/bootstrap --system --test`` installs it, so a missing Orthanc is a failure there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from appliance.demo.nodes import free_port
from tests.receiver.harness import SUCCESS, echo

BINARY = Path("/usr/sbin/Orthanc")
AE_TITLE = "ORTHANC"


def orthanc_binary() -> Path:
    """The Orthanc executable; skips the test (fails it in CI) when there is none."""
    found = BINARY if BINARY.is_file() else None
    if found is None and shutil.which("Orthanc"):
        found = Path(str(shutil.which("Orthanc")))
    if found is None:
        reason = (f"Orthanc is not installed ({BINARY} missing): apt-get install orthanc, or"
                  " scripts/bootstrap --system --test")
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must install it", pytrace=False)
        pytest.skip(reason)
    return found


class Orthanc:
    """``Orthanc --no-jobs CONFIG`` as a child process, its log in a file beside the config."""

    def __init__(self, root: Path, binary: Path | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.dicom_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.dicom_port:
            self.http_port = free_port()
        config = {
            "Name": "tce-e2e",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "DicomAet": AE_TITLE,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": False,
            "HttpServerEnabled": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
        }
        self.config = root / "orthanc.json"
        self.config.write_text(json.dumps(config, indent=2), encoding="utf-8")
        self.log_path = root / "orthanc.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        argv = [str(binary or orthanc_binary()), "--no-jobs", str(self.config)]
        self.proc = subprocess.Popen(argv, cwd=root, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "HOME": str(root)})
        self.returncode: int | None = None
        self.wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"Orthanc exited with {self.proc.returncode}:\n{self.log()}")
            try:
                system = self.get("/system")
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
                continue
            assert system["DicomAet"] == AE_TITLE and system["DicomPort"] == self.dicom_port
            if echo(self.dicom_port, called=AE_TITLE, timeout=2) == SUCCESS:
                return
            time.sleep(0.1)
            continue
        raise AssertionError(f"Orthanc did not answer GET /system within {timeout} s:\n"
                             f"{self.log()}")

    def get_bytes(self, path: str, timeout: float = 30) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return bytes(response.read())

    def get(self, path: str) -> Any:
        """GET a REST resource, decoded from JSON."""
        return json.loads(self.get_bytes(path))

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait; returns the exit status."""
        if self.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.proc.wait(timeout)
            finally:
                if self.proc.poll() is None:  # pragma: no cover - only if it hangs
                    self.proc.kill()
                    self.proc.wait(30)
                self._log.close()
        return self.returncode

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

"""Start a private Orthanc (Debian packages ``orthanc`` + ``orthanc-dicomweb``) for a test or a benchmark.

Free localhost ports for HTTP and DICOM, a temporary storage folder and a JSON config; ready when ``GET
/system`` answers; stopped by :meth:`OrthancServer.stop`. If Orthanc cannot bind a
port another process took in between, it is restarted on new ports (up to three times).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from tests.ports import free_port, refused_port

__all__ = ["OrthancServer", "free_port", "refused_port"]

ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
DICOMWEB_PLUGIN = next((p for p in ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                                    "/usr/lib/orthanc/plugins/libOrthancDicomWeb.so") if Path(p).exists()), None)
SKIP_REASON = ("Orthanc with its DICOMweb plugin is not installed (Debian packages orthanc, orthanc-dicomweb; "
               "scripts/install_sysdeps.sh installs them)")


class OrthancServer:
    """One Orthanc process; ``aet`` ORTHANC, DICOMweb at :attr:`dicomweb_url`."""

    aet = "ORTHANC"

    def __init__(self, workdir: Path, modalities: dict[str, tuple[str, int]] | None = None,
                 extra_config: dict[str, Any] | None = None) -> None:
        if ORTHANC is None or DICOMWEB_PLUGIN is None:
            raise RuntimeError(SKIP_REASON)
        self.workdir = Path(workdir)
        self.modalities = modalities or {}
        self.extra_config = extra_config or {}
        self.proc: subprocess.Popen | None = None
        self.http_port = self.dicom_port = 0
        self.name = f"medvit-test-{uuid.uuid4().hex[:12]}"  # the readiness probe checks it is this server answering

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 30.0) -> OrthancServer:
        for _ in range(3):
            self.http_port, self.dicom_port = free_port(), free_port()
            if self.http_port == self.dicom_port:
                continue
            cfg = {
                "Name": self.name, "StorageDirectory": str(self.workdir / "db"),
                "IndexDirectory": str(self.workdir / "db"), "HttpPort": self.http_port,
                "DicomPort": self.dicom_port, "DicomAet": self.aet, "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False, "Plugins": [DICOMWEB_PLUGIN],
                "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
                "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True, "DicomCheckCalledAet": False,
                "DicomModalities": {k: [aet, "127.0.0.1", port] for k, (aet, port) in self.modalities.items()},
                "ConcurrentJobs": 1, "HttpThreadsCount": 8, "SaveJobs": False,
            } | self.extra_config
            self.workdir.mkdir(parents=True, exist_ok=True)
            (self.workdir / "orthanc.json").write_text(json.dumps(cfg, indent=1))
            self.log = open(self.workdir / "orthanc.log", "wb")  # noqa: SIM115 (closed in stop)
            self.proc = subprocess.Popen([ORTHANC, str(self.workdir / "orthanc.json")], stdout=self.log,
                                         stderr=subprocess.STDOUT)
            if self._wait_ready(timeout_s):
                return self
            self.stop()
        raise RuntimeError(f"Orthanc did not start; log: {(self.workdir / 'orthanc.log').read_text()[-2000:]}")

    def _wait_ready(self, timeout_s: float) -> bool:
        """Readiness probe: GET /system answers with this server's name (False if the process exited, e.g. a port
        was taken; a server another test started on the same port would answer with another name)."""
        import requests

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                r = requests.get(f"{self.http_url}/system", timeout=2)
                if r.status_code == 200:
                    if r.json().get("Name") == self.name:
                        return True
                    return False  # someone else's server holds the HTTP port: start again on new ports
            except (requests.ConnectionError, requests.Timeout, ValueError):
                pass
            time.sleep(0.05)
        return False

    def stop(self, graceful: bool = False) -> None:
        """Stop the server. By default SIGKILL: its store is a throw-away folder and Orthanc's orderly
        shutdown takes seconds; ``graceful`` sends SIGTERM first."""
        if self.proc is not None and self.proc.poll() is None:
            if graceful:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses
    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    def dicomweb(self, query: str = "") -> str:
        """``dicomweb://127.0.0.1:PORT/dicom-web[?query]``"""
        return f"dicomweb://127.0.0.1:{self.http_port}/dicom-web" + (f"?{query}" if query else "")

    def dimse(self, query: str = "") -> str:
        """``dimse://ORTHANC@127.0.0.1:PORT[?query]``"""
        return f"dimse://{self.aet}@127.0.0.1:{self.dicom_port}" + (f"?{query}" if query else "")

    # ------------------------------------------------------------------ native REST helpers (test setup/checks)
    def upload(self, paths: list[Path]) -> None:
        """Store files through Orthanc's own REST API (independent of the code under test)."""
        import requests

        for p in paths:
            r = requests.post(f"{self.http_url}/instances", data=Path(p).read_bytes(), timeout=30)
            r.raise_for_status()

    def instance_tags(self) -> list[dict[str, Any]]:
        """Main tags of every stored instance (``MainDicomTags`` of instance + series + study)."""
        import requests

        out = []
        for iid in requests.get(f"{self.http_url}/instances", timeout=30).json():
            t = requests.get(f"{self.http_url}/instances/{iid}/simplified-tags", timeout=30).json()
            t["_id"] = iid
            out.append(t)
        return out

    def instance_file(self, orthanc_id: str) -> bytes:
        import requests

        r = requests.get(f"{self.http_url}/instances/{orthanc_id}/file", timeout=30)
        r.raise_for_status()
        return r.content

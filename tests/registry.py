"""A private OCI registry for the test run.

``OciRegistry.start_new()`` runs Debian's ``docker-registry serve CONFIG.yml``
(distribution 2.8): plain http on 127.0.0.1 on a free port, filesystem storage
in a temp dir, deletes enabled, no auth. ``stop()`` kills only the process it
started (by pid); ``start()`` runs it again on the same port and storage, so a
test can kill the registry in the middle of a push and bring it back.

``start_new(tls=TlsFiles(cert, key, ca))`` serves HTTPS only (``http: tls:``
in the config) with that certificate; ``.url`` and ``.get()`` then use https
and trust ``ca``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REGISTRY_CANDIDATES = ("/usr/bin/docker-registry",)


class RegistryError(RuntimeError):
    """docker-registry did not start (or stop) as expected."""


def find_registry() -> str | None:
    for candidate in REGISTRY_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("docker-registry") or shutil.which("registry")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_in_use(port: int) -> bool:
    """True if something listens there. SO_REUSEADDR, as Go's listener uses, so
    TIME_WAIT connections left by a killed registry do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate (chain) and key, and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


def _config(port: int, storage: Path, tls: TlsFiles | None = None) -> str:
    http_section: dict[str, object] = {
        "addr": f"127.0.0.1:{port}",
        "headers": {"X-Content-Type-Options": ["nosniff"]},
    }
    if tls is not None:
        http_section["tls"] = {"certificate": str(tls.cert), "key": str(tls.key)}
    # JSON is YAML; this avoids needing a YAML writer.
    return json.dumps(
        {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": str(storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http_section,
        },
        indent=2,
    )


class OciRegistry:
    """A docker-registry process on 127.0.0.1:``port`` with storage in ``root``."""

    def __init__(self, root: Path, port: int, binary: str, tls: TlsFiles | None = None) -> None:
        self.root = root
        self.port = port
        self.binary = binary
        self.tls = tls
        self.storage = root / "storage"
        self.config_path = root / "config.yml"
        self.log_path = root / "registry.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0
        self.storage.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_config(port, self.storage, tls))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    @classmethod
    def start_new(
        cls, root: Path | None = None, timeout: float = 30.0, *, tls: TlsFiles | None = None
    ) -> OciRegistry:
        binary = find_registry()
        if binary is None:
            raise FileNotFoundError("docker-registry")
        root = Path(root or tempfile.mkdtemp(prefix="lockstep-registry-"))
        last: Exception | None = None
        for _ in range(5):  # the free port may be taken between probe and bind
            port = free_port()
            registry = cls(root, port, binary) if tls is None else cls(root, port, binary, tls)
            try:
                registry.start(timeout=timeout)
                return registry
            except RegistryError as exc:
                last = exc
                if "address already in use" not in registry.log_tail().lower():
                    raise
        raise RegistryError(f"could not bind a free port: {last}")

    def start(self, timeout: float = 30.0) -> None:
        """Start (or restart) on the same port and storage; wait for GET /v2/."""
        if self.running:
            return
        if _port_in_use(self.port):
            raise RegistryError(f"port {self.port} is taken; cannot restart the registry there")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,
            )
        deadline = started + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RegistryError(
                    f"docker-registry exited with {self.process.returncode}; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                status = self.get("/v2/")[0]
                if status == 200:
                    self.startup_seconds = time.monotonic() - started
                    return
                last = RegistryError(f"GET /v2/ answered {status}")
            except OSError as exc:
                last = exc
            time.sleep(0.05)
        self.stop()
        raise RegistryError(
            f"docker-registry did not answer GET {self.url}/v2/ in {timeout} s ({last!r}); "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def get(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes]:
        conn: http.client.HTTPConnection
        if self.tls is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        else:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=context)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def stop(self, *, kill: bool = False, grace: float = 10.0) -> None:
        """Stop the process this object started. ``kill=True`` sends SIGKILL at once
        (a crash in the middle of a push); otherwise SIGTERM, wait, SIGKILL."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
            process.wait(timeout=10)
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def close(self) -> None:
        """Stop and remove the storage (session end)."""
        self.stop()
        if os.environ.get("LOCKSTEP_KEEP_REGISTRY_DIR") != "1":
            with contextlib.suppress(OSError):
                shutil.rmtree(self.root)

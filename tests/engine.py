"""A private Docker engine for the test run.

``DockerEngine.start()`` runs Debian's ``dockerd`` (as root) with everything in
one temp dir: its unix socket, ``--data-root``, ``--exec-root``, ``--pidfile``,
an empty ``--config-file`` (so ``/etc/docker/daemon.json`` is never read) and a
log file. ``stop()`` ends only that dockerd, by its pid, and cleans up.

Flags that make it a good neighbour on a shared host (verified on bookworm,
docker.io 20.10.24, kernel 6.x, cgroup v1, ext4):

* ``--bridge=none``: no default ``docker0`` bridge (two engines would fight
  over it, and dockerd leaves it behind). A container started without
  ``--network`` gets only ``lo``; use ``--network none`` or a user-defined
  network.
* ``--iptables=false --ip-forward=false --ip-masq=false``: the host's
  iptables rules, FORWARD policy and ``net.ipv4.ip_forward`` are left alone.
  Containers on one user-defined bridge still reach each other by name (the
  embedded DNS at 127.0.0.11 works), the host reaches container IPs and
  published ports (``-p 127.0.0.1::PORT``, via docker-proxy), and containers
  reach nothing outside the host (no forwarding, no NAT).
* ``--default-address-pool``: a 10.x.0.0/16 that no host route overlaps, so
  concurrent engines do not hand out the same subnets.
* the storage driver is dockerd's own choice (overlay2 on ext4 here);
  ``LOCKSTEP_DOCKERD_STORAGE_DRIVER`` overrides it (e.g. ``vfs``).

The docker CLI warns "IPv4 forwarding is disabled. Networking will not
work." on ``docker run``; that is expected here and only means "no route
out of the host".
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

DOCKERD_CANDIDATES = ("/usr/sbin/dockerd", "/usr/bin/dockerd")
# The CLI that matches the Debian engine; /usr/local/bin/docker may be a newer one.
DOCKER_CLI_CANDIDATES = ("/usr/bin/docker",)
BUILTIN_NETWORKS = frozenset({"bridge", "host", "none"})


class EngineError(RuntimeError):
    """dockerd did not start (or stop) as expected."""


def find_dockerd() -> str | None:
    for candidate in DOCKERD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("dockerd")


def find_docker_cli() -> str | None:
    for candidate in DOCKER_CLI_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("docker")


def _host_routes() -> list[ipaddress.IPv4Network]:
    routes: list[ipaddress.IPv4Network] = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return routes
    for line in lines:
        parts = line.split()
        if len(parts) < 8:
            continue
        dest = ipaddress.IPv4Address(int(parts[1], 16).to_bytes(4, "little"))
        mask = ipaddress.IPv4Address(int(parts[7], 16).to_bytes(4, "little"))
        with contextlib.suppress(ValueError):
            net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
            if net.prefixlen > 0:  # the default route overlaps everything
                routes.append(net)
    return routes


def pick_address_pool() -> str:
    """A 10.x.0.0/16 that overlaps no route on this host."""
    override = os.environ.get("LOCKSTEP_DOCKERD_ADDRESS_POOL")
    if override:
        return override
    routes = _host_routes()
    seconds = list(range(128, 255))
    random.Random(os.getpid() ^ time.time_ns()).shuffle(seconds)
    for second in seconds:
        net = ipaddress.IPv4Network(f"10.{second}.0.0/16")
        if not any(net.overlaps(r) for r in routes):
            return str(net)
    raise EngineError("no free 10.x.0.0/16 for dockerd's address pool")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """If the test process dies without teardown, dockerd gets SIGTERM."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point.startswith(prefix) or mount_point == str(root):
                found.append(mount_point)
    return found


LEFTOVER_NAMES = ("containerd", "containerd-shim", "containerd-shim-runc-v2", "docker-proxy")


def _leftover_pids(root: Path) -> list[int]:
    """containerd, shims or docker-proxy processes whose command line names our
    private dir: started on our behalf by our dockerd, and only ours."""
    needle = str(root).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if os.path.basename(argv[0].decode(errors="replace")) in LEFTOVER_NAMES and any(
                needle in arg for arg in argv[1:]
            ):
                pids.append(int(entry.name))
    return pids


@dataclass
class DockerEngine:
    """A running private dockerd. ``client`` is a docker SDK client for it."""

    root: Path
    process: subprocess.Popen[bytes]
    client: docker.DockerClient
    host: str  # DOCKER_HOST url: unix:///…/docker.sock
    log_path: Path
    address_pool: str
    startup_seconds: float
    storage_driver: str = ""
    docker_cli: str | None = None
    _bridges: set[str] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def socket_path(self) -> Path:
        return Path(self.host.removeprefix("unix://"))

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for the docker CLI (or skopeo) aimed at this engine."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.root / "cli-config")
        env.update(extra)
        return env

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine; raises with stderr on failure."""
        if self.docker_cli is None:
            raise EngineError("no docker CLI installed")
        proc = subprocess.run(
            [self.docker_cli, *args],
            env=self.env(),
            capture_output=True,
            timeout=timeout,
            input=input,
            text=True,
        )
        if check and proc.returncode != 0:
            raise EngineError(
                f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.strip()}"
            )
        return proc

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    # --- life cycle --------------------------------------------------------------------

    @classmethod
    def start(cls, root: Path | None = None, timeout: float = 60.0) -> DockerEngine:
        dockerd = find_dockerd()
        if dockerd is None:
            raise FileNotFoundError("dockerd")
        if os.geteuid() != 0:
            raise PermissionError("dockerd needs root")
        # Short path: containerd's sockets live under --exec-root (108-byte limit).
        root = Path(root or tempfile.mkdtemp(prefix="lsd-"))
        for sub in ("data", "exec", "cli-config"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "daemon.json").write_text("{}\n")
        sock = root / "docker.sock"
        host = f"unix://{sock}"
        pool = pick_address_pool()
        log_path = root / "dockerd.log"
        argv = [
            dockerd,
            f"--config-file={root / 'daemon.json'}",
            f"--host={host}",
            f"--data-root={root / 'data'}",
            f"--exec-root={root / 'exec'}",
            f"--pidfile={root / 'dockerd.pid'}",
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            f"--default-address-pool=base={pool},size=24",
            "--shutdown-timeout=3",
            "--log-level=info",
        ]
        driver = os.environ.get("LOCKSTEP_DOCKERD_STORAGE_DRIVER")
        if driver:
            argv.append(f"--storage-driver={driver}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin"
        env["DOCKER_TMPDIR"] = str(root / "data" / "tmp")

        started = time.monotonic()
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=root,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        client = None
        try:
            client = _wait_for_ping(host, process, log_path, started + timeout)
            elapsed = time.monotonic() - started
            engine = cls(
                root=root,
                process=process,
                client=client,
                host=host,
                log_path=log_path,
                address_pool=pool,
                startup_seconds=elapsed,
                docker_cli=find_docker_cli(),
            )
            engine.storage_driver = client.info().get("Driver", "")
            return engine
        except BaseException:
            if client is not None:
                client.close()
            _cleanup(root, process, set(), None)
            raise

    def stop(self, *, keep_dir: bool | None = None) -> None:
        """Stop this dockerd (only it, by pid) and remove its directory."""
        if self.process.poll() is None:
            self._remove_containers_and_networks()
        with contextlib.suppress(Exception):
            self.client.close()
        _cleanup(self.root, self.process, self._bridges, keep_dir)

    def _remove_containers_and_networks(self) -> None:
        """Bridges of user-defined networks outlive dockerd unless removed first."""
        try:
            for container in self.client.containers.list(all=True):
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
            for network in self.client.networks.list():
                if network.name in BUILTIN_NETWORKS:
                    continue
                self._bridges.add(
                    network.attrs.get("Options", {}).get("com.docker.network.bridge.name")
                    or f"br-{network.id[:12]}"
                )
                with contextlib.suppress(docker.errors.APIError):
                    network.remove()
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass


def _cleanup(
    root: Path, process: subprocess.Popen[bytes], bridges: set[str], keep_dir: bool | None
) -> None:
    """Stop our dockerd and remove what it leaves: processes it started, mounts
    (it bind-mounts --data-root onto itself, and leaves that behind when it fails
    to start), bridges, and (unless LOCKSTEP_KEEP_ENGINE_DIR=1) its directory."""
    if keep_dir is None:
        keep_dir = os.environ.get("LOCKSTEP_KEEP_ENGINE_DIR") == "1"
    killed = _terminate(process)
    # If dockerd had to be killed, its containerd and shims may outlive it;
    # they are ours: their command lines name our private directory.
    leftovers = _leftover_pids(root)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for mount_point in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount_point], check=False, capture_output=True)
    ip = shutil.which("ip")
    for bridge in bridges:
        if ip and Path("/sys/class/net", bridge).exists():
            subprocess.run([ip, "link", "del", bridge], check=False, capture_output=True)
    if not keep_dir:
        shutil.rmtree(root, ignore_errors=True)
    if killed or leftovers:
        warnings.warn(
            f"dockerd {process.pid} did not stop cleanly (SIGKILL needed: {killed}; "
            f"killed leftover processes: {leftovers})",
            stacklevel=3,
        )


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of dockerd's log, without containerd's grpc chatter."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    useful = [line for line in text.splitlines() if "module=grpc" not in line]
    return "\n".join(useful[-lines:])


def _wait_for_ping(
    host: str, process: subprocess.Popen[bytes], log_path: Path, deadline: float
) -> docker.DockerClient:
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineError(
                f"dockerd exited with {process.returncode} before answering on {host}; "
                f"its log ({log_path}, removed unless LOCKSTEP_KEEP_ENGINE_DIR=1) ends:\n"
                f"{log_tail(log_path)}"
            )
        client = None
        try:
            client = docker.DockerClient(base_url=host, version="auto", timeout=30)
            if client.ping():
                return client
        except (
            docker.errors.DockerException,
            requests.exceptions.RequestException,
            OSError,
        ) as exc:
            last = exc
        if client is not None:
            client.close()
        time.sleep(0.05)
    raise EngineError(
        f"dockerd (pid {process.pid}) did not answer a ping on {host} in time "
        f"(last error: {last!r}); its log ({log_path}, removed unless "
        f"LOCKSTEP_KEEP_ENGINE_DIR=1) ends:\n{log_tail(log_path)}"
    )


def _terminate(process: subprocess.Popen[Any], grace: float = 20.0) -> bool:
    """SIGTERM, wait, SIGKILL. Returns True if SIGKILL was needed."""
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
        return False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return True

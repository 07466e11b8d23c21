"""The Debian base layer: the locked packages' files plus what maintainer scripts would add."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

from lockstep.assembly.deb import USR_MERGED, deb_control, deb_entries
from lockstep.assembly.entries import Entry, normalize, through_symlink
from lockstep.assembly.layout import CA_BUNDLE, NONROOT, NONROOT_UID, PYTHON
from lockstep.core.errors import BadInput
from lockstep.core.platforms import Platform, by_deb_arch
from lockstep.inputs.debian.lock import DebianLock, DebPackage

# Docs: never read in an image.
DROPPED_PREFIXES = (
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/lintian/",
    "usr/share/bug/",
)


def dropped_prefixes(platform: Platform) -> tuple[str, ...]:
    """What the base leaves out: the docs, and glibc's iconv modules (gconv, 8 MB, in the
    platform's libdir): Python's codecs never use iconv(3)."""
    return (*DROPPED_PREFIXES, f"{platform.libdir}/gconv/")


UNPACK_WORKERS = max(1, min(4, os.cpu_count() or 1))

LIBC_BIN_KEEP = ("usr/lib/locale/C.utf8/",)

PASSWD = (
    b"root:x:0:0:root:/root:/sbin/nologin\n"
    b"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    + f"{NONROOT}:x:{NONROOT_UID}:{NONROOT_UID}:{NONROOT}:/nonexistent:/sbin/nologin\n".encode()
)
GROUP = f"root:x:0:\nnogroup:x:65534:\n{NONROOT}:x:{NONROOT_UID}:\n".encode()
# Without nsswitch.conf glibc asks DNS before /etc/hosts; containers want files first.
NSSWITCH = (
    b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
    b"networks: files\nprotocols: files\nservices: files\n"
)
# Container runtimes mount their own /etc/hosts; this one serves a plain chroot or runc.
HOSTS = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def _keep(package: str, entry: Entry, dropped: tuple[str, ...]) -> bool:
    path = entry.path + ("/" if entry.kind == "dir" else "")
    if path.startswith("usr/share/doc/"):
        # Keep each package's copyright notice (licences), drop the rest of the docs.
        return entry.kind == "file" and path.endswith("/copyright")
    if path.startswith(dropped):
        return False
    if package == "libc-bin":
        return path.startswith(LIBC_BIN_KEEP)
    return True


def ca_bundle(entries: Iterable[Entry]) -> bytes:
    """``usr/share/ca-certificates/**/*.crt`` sorted by path and concatenated."""
    certs = sorted(
        (
            e
            for e in entries
            if e.kind == "file"
            and e.path.startswith("usr/share/ca-certificates/")
            and e.path.endswith(".crt")
        ),
        key=lambda e: e.path,
    )
    out = bytearray()
    for e in certs:
        out += e.data
        if not e.data.endswith(b"\n"):
            out += b"\n"
    return bytes(out)


def base_entries(lock: DebianLock, debs: Mapping[str, bytes]) -> list[Entry]:
    """The base layer: every locked package's files plus what maintainer scripts would add.

    The lock's architecture picks the platform's facts (``core.platforms``).
    Dropped: ``usr/share/{doc,man,info,lintian,bug}`` (each package's
    ``copyright`` file is kept), and all of ``libc-bin`` but the ``C.utf8``
    locale, and the platform's gconv modules. Added: usr-merge links (``lib64`` only
    where the platform's loader lives there), ``tmp`` (1777), ``root`` (700),
    ``etc/passwd``/``group`` (root, nobody, nonroot 65532), ``etc/nsswitch.conf``,
    ``etc/hosts`` (localhost),
    the CA bundle built from the ``ca-certificates`` package, ``etc/localtime`` → UTC
    (what tzdata's postinst sets up on a fresh system), ``usr/bin/python3``
    → ``python3.11``, and ``var/lib/dpkg/status.d/<package>`` control stanzas so
    image scanners can see the packages. Two packages shipping the same path with
    different contents is a BadInput.
    """
    platform = by_deb_arch(lock.arch)
    dropped = dropped_prefixes(platform)
    owner: dict[str, tuple[str, Entry]] = {}

    def unpacked(pkg: DebPackage) -> list[Entry]:
        if pkg.name not in debs:
            raise BadInput(f"Debian package {pkg.name} is locked but was not fetched")
        return deb_entries(pkg.name, debs[pkg.name])

    # Unpacked side by side (xz releases the GIL), taken in the lock's order: the same
    # entries, and the first error in that order.
    with ThreadPoolExecutor(UNPACK_WORKERS, thread_name_prefix="deb") as pool:
        files = list(pool.map(unpacked, lock.packages))
    for pkg, pkg_entries in zip(lock.packages, files, strict=True):
        for entry in pkg_entries:
            if not _keep(pkg.name, entry, dropped):
                continue
            prev = owner.get(entry.path)
            if prev is not None and prev[1] != entry and not (prev[1].kind == entry.kind == "dir"):
                raise BadInput(
                    f"Debian packages {prev[0]} and {pkg.name} both ship "
                    f"{entry.path!r} with different contents"
                )
            if prev is None or prev[1].kind != "dir":
                owner[entry.path] = (pkg.name, entry)
        owner[f"var/lib/dpkg/status.d/{pkg.name}"] = (
            pkg.name,
            Entry.file(f"var/lib/dpkg/status.d/{pkg.name}", deb_control(pkg.name, debs[pkg.name])),
        )
    entries = [e for _, e in owner.values()]
    extra: list[Entry] = [
        Entry.dir("tmp", 0o1777),
        Entry.dir("root", 0o700),
        Entry.dir("etc", 0o755),
        Entry.dir("var/lib/dpkg/status.d"),
        Entry.file("etc/passwd", PASSWD),
        Entry.file("etc/group", GROUP),
        Entry.file("etc/nsswitch.conf", NSSWITCH),
        Entry.file("etc/hosts", HOSTS),
    ]
    for top in USR_MERGED:
        if (
            f"usr/{top}" in owner
            or top in ("bin", "sbin", "lib")
            or (top == "lib64" and platform.lib64_link)
        ):
            extra.append(Entry.symlink(top, f"usr/{top}"))
    if "ca-certificates" in debs:
        extra.append(Entry.file(CA_BUNDLE, ca_bundle(entries)))
    if "usr/share/zoneinfo/Etc/UTC" in owner and "etc/localtime" not in owner:
        extra.append(Entry.symlink("etc/localtime", "../usr/share/zoneinfo/Etc/UTC"))
    python_dir, _, python_name = PYTHON.rpartition("/")
    if PYTHON in owner and f"{python_dir}/python3" not in owner:
        extra.append(Entry.symlink(f"{python_dir}/python3", python_name))
    out = normalize([*entries, *extra])
    found = through_symlink(out)
    if found:
        raise BadInput(f"base layer: {found[0]!r} passes through the symlink {found[1]!r}")
    return out

"""A ``.deb``'s files as layer entries, unpacked by strict path rules (no dpkg)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import posixpath
import tarfile
from dataclasses import dataclass

from lockstep.assembly.entries import Entry, through_symlink
from lockstep.core.errors import BadInput

USR_MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def usr_merge(path: str) -> str:
    """``lib/x`` → ``usr/lib/x`` for the usr-merged top-level directories."""
    top, _, rest = path.partition("/")
    if top in USR_MERGED:
        return f"usr/{top}/{rest}" if rest else f"usr/{top}"
    return path


@dataclass(frozen=True)
class ArMember:
    name: str
    data: bytes


def read_ar(data: bytes, where: str) -> list[ArMember]:
    """The members of a (System V / GNU) ``ar`` archive, as ``dpkg-deb`` writes them."""
    if not data.startswith(b"!<arch>\n"):
        raise BadInput(f"{where}: not a .deb (no ar magic)")
    pos = 8
    out: list[ArMember] = []
    while pos < len(data):
        if data[pos : pos + 1] == b"\n":  # stray padding
            pos += 1
            continue
        header = data[pos : pos + 60]
        if len(header) != 60 or header[58:60] != b"`\n":
            raise BadInput(f"{where}: corrupt ar header at byte {pos}")
        name = header[:16].decode("ascii", "replace").rstrip()
        if name.endswith("/"):
            name = name[:-1]
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise BadInput(f"{where}: corrupt ar member size at byte {pos}") from exc
        start = pos + 60
        if start + size > len(data):
            raise BadInput(f"{where}: truncated ar member {name!r}")
        out.append(ArMember(name, data[start : start + size]))
        pos = start + size + (size & 1)
    return out


def _decompress(name: str, blob: bytes, where: str) -> bytes:
    try:
        if name.endswith(".xz"):
            return lzma.decompress(blob)
        if name.endswith(".gz"):
            return gzip.decompress(blob)
        if name.endswith(".bz2"):
            return bz2.decompress(blob)
        if name.endswith(".tar"):
            return blob
    except (lzma.LZMAError, OSError, EOFError, ValueError) as exc:
        raise BadInput(f"{where}: cannot decompress {name} ({exc})") from exc
    raise BadInput(
        f"{where}: {name} uses a compression lockstep does not read "
        "(xz, gz, bz2 or none); bookworm packages use xz"
    )


def _member(ar: list[ArMember], prefix: str, where: str) -> ArMember:
    for m in ar:
        if m.name == prefix or m.name.startswith(prefix + "."):
            return m
    raise BadInput(f"{where}: no {prefix}.* member")


def _open_tar(raw: bytes, where: str) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    except tarfile.TarError as exc:
        raise BadInput(f"{where} is not a tar archive ({exc})") from exc


def _clean_member(name: str, package: str) -> list[str]:
    if name.startswith("/"):
        raise BadInput(
            f"Debian package {package}: member {name!r} has an absolute path; refusing it"
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadInput(f"Debian package {package}: member {name!r} contains '..'; refusing it")
    return parts


def _rewrite_target(package: str, member: str, orig: str, new: str, target: str) -> str:
    """The safe, relative target for a link at ``orig`` (package path) moved to ``new``.

    The target is resolved from the link's own directory (``/`` for an absolute
    one) and must stay inside the root; it is then mapped through usr-merge and
    written relative to the link's new directory.
    """
    if not target or "\0" in target:
        raise BadInput(f"Debian package {package}: symlink {member!r} has an empty target")
    if target.startswith("/"):
        resolved = posixpath.normpath(target)[1:]  # "/.." is "/" inside the image
    else:
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(orig), target))
        if resolved == ".." or resolved.startswith("../"):
            raise BadInput(
                f"Debian package {package}: symlink {member!r} -> {target!r} "
                "points outside the image root; refusing it"
            )
        if resolved == ".":
            resolved = ""
    mapped = usr_merge(resolved) if resolved else ""
    return posixpath.relpath(mapped or ".", posixpath.dirname(new) or ".")


def deb_entries(package_name: str, deb_bytes: bytes) -> list[Entry]:
    """The files of a ``.deb``'s ``data.tar.*`` as layer entries, sorted by path.

    Rules (anything else is refused with a BadInput naming package and member):

    * paths are relative; a member that is absolute or contains ``..`` is refused;
    * usr-merge: members under ``bin/``, ``sbin/``, ``lib/``, ``lib32/``,
      ``lib64/``, ``libx32/`` move to ``usr/…`` (the base links ``bin`` →
      ``usr/bin`` etc.);
    * symlinks: the target is resolved from the link's directory in the
      package (``/`` for an absolute target) and must stay inside the root, else
      it is refused (``../../../../etc``). Every target is then written
      *relative* to the link's place after usr-merge — absolute targets occur in
      bookworm (``lib64/ld-linux-x86-64.so.2`` → ``/lib/x86_64-linux-gnu/…``,
      ``usr/lib/ssl/certs`` → ``/etc/ssl/certs``), and a relative one means the
      same inside the image and cannot reach outside a materialised root on the
      host;
    * a member whose path passes through one of the package's symlinks is refused;
    * hardlinks become regular files with the linked member's bytes;
    * device nodes, fifos and other special files are refused;
    * the package's root directory (``./``) is dropped.
    """
    where = f"Debian package {package_name}"
    ar = read_ar(deb_bytes, where)
    data_member = _member(ar, "data.tar", where)
    raw = _decompress(data_member.name, data_member.data, where)
    entries: dict[str, Entry] = {}
    member_of: dict[str, str] = {}
    with _open_tar(raw, f"{where}: {data_member.name}") as tar:
        for info in tar.getmembers():
            parts = _clean_member(info.name, package_name)
            if not parts:
                if info.isdir():
                    continue
                raise BadInput(f"{where}: member {info.name!r} has no name; refusing it")
            orig = "/".join(parts)
            path = usr_merge(orig)
            mode = info.mode & 0o7777
            if info.isdir():
                entry = Entry.dir(path, mode)
            elif info.issym():
                entry = Entry.symlink(
                    path, _rewrite_target(package_name, info.name, orig, path, info.linkname)
                )
            elif info.islnk():
                # A hardlink shares its target's inode: same bytes, same mode.
                linked = entries.get(
                    usr_merge("/".join(_clean_member(info.linkname, package_name)))
                )
                if linked is None or linked.kind != "file":
                    raise BadInput(
                        f"{where}: hardlink {info.name!r} -> {info.linkname!r} "
                        "has no earlier regular file as its target"
                    )
                entry = Entry.file(path, linked.data, linked.mode)
            elif info.isfile():
                try:
                    handle = tar.extractfile(info)
                except (KeyError, tarfile.TarError) as exc:
                    raise BadInput(f"{where}: cannot read member {info.name!r}") from exc
                if handle is None:
                    raise BadInput(f"{where}: member {info.name!r} has no data")
                entry = Entry.file(path, handle.read(), mode)
            else:
                raise BadInput(
                    f"{where}: member {info.name!r} is a device, fifo or other "
                    "special file; an image base must not contain those"
                )
            if path in entries and not (entries[path].kind == entry.kind == "dir"):
                raise BadInput(f"{where}: member {info.name!r} appears twice")
            entries[path] = entry
            member_of[path] = info.name
    found = through_symlink(entries.values())
    if found:
        path, link = found
        raise BadInput(
            f"{where}: member {member_of[path]!r} passes through the "
            f"package's symlink {member_of[link]!r}; refusing it"
        )
    return [entries[p] for p in sorted(entries)]


def deb_control(package_name: str, deb_bytes: bytes) -> bytes:
    """The ``control`` file of a ``.deb`` (its stanza for ``/var/lib/dpkg/status.d``)."""
    where = f"Debian package {package_name}"
    ar = read_ar(deb_bytes, where)
    member = _member(ar, "control.tar", where)
    raw = _decompress(member.name, member.data, where)
    with _open_tar(raw, f"{where}: {member.name}") as tar:
        for info in tar.getmembers():
            if info.name in ("./control", "control") and info.isfile():
                handle = tar.extractfile(info)
                if handle is not None:
                    return handle.read()
    raise BadInput(f"{where}: control.tar has no control file")

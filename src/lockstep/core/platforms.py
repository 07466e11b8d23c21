"""The platforms lockstep builds for, and every fact that differs between them, keyed by platform.

A platform is named as OCI names it (``linux/amd64``, ``linux/arm64``). Its
Debian architecture, multiarch triplet, ELF loader, whether the base has a
``lib64`` link, and the machine name (``uname -m``, also qemu's binfmt entry)
are defined here once; the locks, the base layer, the staged python, the image
configs and the archives' names all read them from ``PLATFORMS``.

``emulation_problem`` says, in one line, why this host cannot run a platform's
binaries (its own architecture runs natively; another needs qemu-user registered
with binfmt_misc, flags including ``F`` so that containers can use it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lockstep.core.errors import BadInput

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
QEMU_HINT = (
    "install qemu-user-static and binfmt-support, mount binfmt_misc "
    "(mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc) and run "
    "`update-binfmts --enable qemu-{machine}` (as .ci/run does)"
)


@dataclass(frozen=True)
class Platform:
    """One OS/architecture an image is built for, and what differs in its files."""

    name: str  # OCI: "linux/amd64"
    architecture: str  # OCI / Go: "amd64", "arm64" (also the config's ``architecture``)
    deb_arch: str  # Debian: "amd64", "arm64" (``binary-<arch>``, the ``.deb``s' arch)
    triplet: str  # multiarch: "x86_64-linux-gnu"
    loader: str  # the ELF interpreter, relative to the image's root
    lib64_link: bool  # whether the base links ``lib64`` → ``usr/lib64`` (amd64's loader)
    machine: str  # ``uname -m``: "x86_64", "aarch64" (qemu's binfmt entry: qemu-<machine>)

    @property
    def os(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def libdir(self) -> str:
        """The multiarch library directory, relative to the image's root."""
        return f"usr/lib/{self.triplet}"

    @property
    def tag(self) -> str:
        """The platform in a file or tag name: ``linux-arm64``."""
        return self.name.replace("/", "-")


AMD64 = Platform(
    name="linux/amd64",
    architecture="amd64",
    deb_arch="amd64",
    triplet="x86_64-linux-gnu",
    loader="usr/lib64/ld-linux-x86-64.so.2",
    lib64_link=True,
    machine="x86_64",
)
ARM64 = Platform(
    name="linux/arm64",
    architecture="arm64",
    deb_arch="arm64",
    triplet="aarch64-linux-gnu",
    loader="usr/lib/ld-linux-aarch64.so.1",
    lib64_link=False,
    machine="aarch64",
)
PLATFORMS: dict[str, Platform] = {p.name: p for p in (AMD64, ARM64)}
DEFAULT: tuple[str, ...] = tuple(PLATFORMS)  # a project builds every platform unless it says


def platform(name: str, where: str = "platform") -> Platform:
    """The platform named ``name``; BadInput naming the known ones."""
    try:
        return PLATFORMS[name]
    except KeyError:
        raise BadInput(
            f"{where}: unknown platform {name!r}; lockstep builds {', '.join(PLATFORMS)}"
        ) from None


def by_deb_arch(deb_arch: str) -> Platform:
    for p in PLATFORMS.values():
        if p.deb_arch == deb_arch:
            return p
    raise KeyError(deb_arch)


def host() -> Platform | None:
    """This machine's platform, or None if lockstep builds none for it."""
    machine = os.uname().machine
    return next((p for p in PLATFORMS.values() if p.machine == machine), None)


def emulation_problem(target: Platform, binfmt_dir: Path = BINFMT_DIR) -> str | None:
    """Why this host cannot run ``target``'s binaries, in one line; None if it can."""
    here = host()
    if here is not None and here == target:
        return None
    hint = QEMU_HINT.format(machine=target.machine)
    entry = binfmt_dir / f"qemu-{target.machine}"
    if not (binfmt_dir / "register").exists():
        return f"{target.name} binaries cannot run here: binfmt_misc is not mounted; {hint}"
    try:
        text = entry.read_text()
    except OSError:
        return f"{target.name} binaries cannot run here: no {entry} entry; {hint}"
    lines = text.splitlines()
    if not lines or lines[0].strip() != "enabled":
        return f"{target.name} binaries cannot run here: {entry} is disabled; {hint}"
    fields = dict(line.split(" ", 1) for line in lines[1:] if " " in line)
    interpreter = fields.get("interpreter", "")
    if not interpreter or not Path(interpreter).exists():
        return (
            f"{target.name} binaries cannot run here: {entry} names the interpreter "
            f"{interpreter!r}, which is missing; {hint}"
        )
    if "F" not in fields.get("flags:", ""):
        return (
            f"{target.name} binaries cannot run here in containers: {entry} lacks the F "
            f"(fix-binary) flag; {hint}"
        )
    return None

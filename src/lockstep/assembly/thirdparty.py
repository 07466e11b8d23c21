"""The third-party layers: locked wheels installed for the image's python, every file verified,
grouped into layers so that one wheel's change rebuilds only its own layer.

``wheel_entries`` installs one wheel the way ``pip install --target`` would,
without pip, by the rules of ``lockstep.core.wheels`` (which the workers use
for bundle environments too): its files and ``purelib``/``platlib`` under the
image's ``dist-packages``, each checked against the wheel's own ``RECORD``;
console scripts (their shebangs would name the build host's python), headers
and data are left out, and byte code is compiled later by the image's python. The wheel's
bytes were checked against the lock's sha256 when fetched, so an edited lock or
a tampered cache is an error, never a different image.

``plan_layers`` groups wheels into a bounded number of layers that stay put:
each large wheel (numpy, scipy, pyarrow…) is a layer of its own; the small ones
fall into ``SMALL_GROUPS`` buckets by a hash of their project name, so a new
version of one small wheel rebuilds one bucket and nothing else moves. Pure
wheels (``…-none-any``) never share a layer with a platform's binary wheels:
their buckets (``pure-N``) and their large layers are chosen from the pure
wheels alone, so every platform of a build has the same pure layers, one blob.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lockstep.assembly.entries import Entry
from lockstep.assembly.layout import SITE_DIR
from lockstep.core import wheels
from lockstep.core.errors import CheckFailed
from lockstep.inputs.python.lock import LockedWheel

LARGE_WHEEL = 512 << 10  # a wheel this big (compressed) gets a layer of its own
MAX_LARGE = 24  # at most this many such layers; the smallest of any others join the buckets
SMALL_GROUPS = 8


@dataclass(frozen=True)
class WheelGroup:
    """One third-party layer: its name (``numpy`` or ``group-2``) and its wheels, by name."""

    name: str
    wheels: tuple[LockedWheel, ...]

    @property
    def pure(self) -> bool:
        """Whether every wheel is pure Python (the same layer on every platform)."""
        return all(is_pure(w) for w in self.wheels)

    @property
    def identity(self) -> str:
        """Its wheels' sha256s: what names the layer in its key (with the compiler)."""
        return ",".join(w.sha256 for w in self.wheels)

    def describe(self) -> str:
        """What the layer holds, for its history entry and ``lockstep inspect``."""
        return ", ".join(f"{w.project} {w.version}" for w in self.wheels)


def wheel_entries(wheel: LockedWheel, data: bytes) -> list[Entry]:
    """The files ``wheel`` installs, as entries under ``SITE_DIR``, each checked against the
    wheel's ``RECORD`` (``core.wheels.verified_members``); CheckFailed naming the wheel."""
    try:
        members = list(wheels.verified_members(data, wheel.project))
    except wheels.WheelRejected as exc:
        raise CheckFailed(f"{wheel.filename}: {exc}; refusing the wheel (re-lock)") from None
    return [
        Entry.file(f"{SITE_DIR}/{m.target}", m.content, 0o755 if m.executable else 0o644)
        for m in members
    ]


def group_of(project: str) -> int:
    """The bucket of a small wheel: a stable hash of its normalised project name."""
    key = project.lower().replace("_", "-").replace(".", "-")
    return hashlib.sha256(key.encode()).digest()[0] % SMALL_GROUPS


def is_pure(wheel: LockedWheel) -> bool:
    """A wheel whose every tag is ``…-none-any``: the same files for every platform."""
    name = wheels.parse_wheel_name(wheel.filename)
    return name is not None and all(t.endswith("-none-any") for t in name.tags)


def _large(found: Sequence[LockedWheel], sizes: Mapping[str, int], most: int) -> list[LockedWheel]:
    return sorted((w for w in found if sizes[w.sha256] >= LARGE_WHEEL),
                  key=lambda w: (-sizes[w.sha256], w.project))[:most]  # fmt: skip


def plan_layers(wheels: Sequence[LockedWheel], sizes: Mapping[str, int]) -> list[WheelGroup]:
    """The third-party layers for ``wheels`` (``sizes``: bytes by sha256), in a fixed order:
    the large wheels alone by name, then the binary wheels' buckets (``group-N``), then the
    pure wheels' (``pure-N``)."""
    pure = [w for w in wheels if is_pure(w)]
    native = [w for w in wheels if not is_pure(w)]
    large = _large(pure, sizes, MAX_LARGE)  # chosen from the pure ones alone: the same
    large += _large(native, sizes, MAX_LARGE - len(large))  # on every platform
    alone = {w.sha256 for w in large}
    groups = [WheelGroup(w.project.lower(), (w,)) for w in sorted(large, key=lambda w: w.project)]
    for prefix, found in (("group", native), ("pure", pure)):
        buckets: dict[int, list[LockedWheel]] = {}
        for w in found:
            if w.sha256 not in alone:
                buckets.setdefault(group_of(w.project), []).append(w)
        groups += [
            WheelGroup(f"{prefix}-{i}", tuple(sorted(buckets[i], key=lambda w: w.project)))
            for i in sorted(buckets)
        ]
    return groups

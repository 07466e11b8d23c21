"""``lockstep bundle lock DIR``: a bundle's requirements locked for the worker image, on
every platform it is built for.

The image is a ``LockBase`` (``bundles/image_pins.py``): its Python lock and each
platform's complete platform, from a checkout or from the images themselves. The
resolve is the image lock's own (``inputs.python.lock.resolve``): one ``pex3 lock
create --style strict --no-build`` with one resolve per platform (wheels only, a
sha256 per artifact), constrained to the image: every project the image's Python
lock pins is passed as a constraint (``inputs.python.lock.pins``: ``name==version``,
per platform where the platforms differ), so it resolves to the image's exact version
and is then left out of the bundle's lock (the image provides it). A requirement the
image's versions cannot meet is an error naming both sides. Every wheel of every
platform is then downloaded once into the lockstep cache (checked against its sha256),
where the runner finds it to send it to the workers. The lock is written atomically as
``DIR/lockstep.lock.json`` (``lockstep.bundles.lockfile``).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lockstep.bundles.image_pins import LockBase
from lockstep.bundles.lockfile import (
    LOCK_FILE,
    Declared,
    LockedWheel,
    PlatformLock,
    lock_body,
    lock_bytes,
    parse_lock,
    per_platform,
    read_declared,
    relock_hint,
)
from lockstep.core.atomic import write_bytes
from lockstep.core.digests import sha256_digest
from lockstep.core.errors import BadInput, LockstepError, ServiceFailed
from lockstep.core.fetch import fetch_verified
from lockstep.core.progress import Progress, quiet
from lockstep.core.store import Cache
from lockstep.core.wheels import normalize_name, parse_wheel_name
from lockstep.inputs.python import lock as image_lock
from lockstep.inputs.python.pex import PEX_VERSION

_CONFLICT = re.compile(
    r"The conflict is caused by:\s*\n(?P<lines>(?:.*The user requested.*\n?|.*depends on.*\n?)+)"
)


def check_against_image(declared: Declared, pins: dict[str, str], where: str, image: str) -> None:
    """``BadInput`` naming both sides for a requirement the image's pinned version does not meet."""
    from packaging.requirements import InvalidRequirement, Requirement

    for line in declared.requirements:
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise BadInput(f"{where}: requirement {line!r} does not parse ({exc}); fix it") from exc
        name = normalize_name(req.name)
        pinned = pins.get(name)
        if pinned is not None and not req.specifier.contains(pinned, prereleases=True):
            raise BadInput(
                f"{where}: requirement {line!r} conflicts with the image, which pins "
                f"{name}=={pinned} ({image}); a bundle cannot replace what "
                f"the image pins: require a range that includes {pinned}"
            )


def _conflict(output: str) -> str:
    """pip's "conflict is caused by" lines, the image's constraints named as such."""
    found = _CONFLICT.search(output)
    if not found:
        return ""
    lines = [
        " ".join(ln.replace("pip:", "").split())
        for ln in found.group("lines").splitlines()
        if ln.strip() and ln.replace("pip:", "").strip()
    ]
    return "; ".join(
        ln.replace("The user requested (constraint)", "the image pins").replace(
            "The user requested", "the bundle requires"
        )
        for ln in lines
    )


def lock_bundle(
    bundle: Path,
    image: LockBase,
    cache_dir: Path,
    progress: Progress = quiet,
) -> Path:
    """Lock the requirements of the bundle at ``bundle`` for every platform of ``image``;
    the lock file's path."""
    bundle = bundle.resolve()
    if not bundle.is_dir():
        raise BadInput(f"{bundle}: not a bundle directory")
    declared, problems = read_declared(bundle)
    if problems:
        file, problem = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise BadInput(f"{file}: {problem}{more}")
    if declared is None:
        raise BadInput(
            f"{bundle}: declares no requirements; list them in pyproject.toml "
            "([project] dependencies) or requirements.txt"
        )
    where = str(bundle / declared.file)
    images = image.locks()
    pins = {p: image.pins(p) for p in image.platforms}
    for platform_pins in pins.values():
        check_against_image(declared, platform_pins, where, image.where)
    pinned = {name for platform_pins in pins.values() for name in platform_pins}
    progress(
        f"locking {', '.join(declared.requirements)} for {', '.join(image.platforms)}, "
        f"constrained to the image's {len(pinned)} pinned projects ({image.where})"
    )
    with tempfile.TemporaryDirectory(prefix="lockstep-bundle-lock-") as tmp:
        files = []
        for platform in image.platforms:
            path = Path(tmp) / f"complete-platform-{platform.replace('/', '-')}.json"
            path.write_bytes(image.complete_platforms[platform])
            files.append(path)
        constraints = Path(tmp) / "image-constraints.txt"
        constraints.write_text(image_lock.pins(images))
        try:
            raw = image_lock.resolve(
                declared.requirements, files, constraints, cache_dir, "bundle lock", progress
            )
        except LockstepError as exc:
            raise _lock_error(exc, cache_dir, where) from exc
    try:
        locked = image_lock.parse_locks(raw, f"the pex lock for {where}")
    except BadInput as exc:
        raise BadInput(f"{exc.message.split('; run')[0]}; fix the requirements in {where}") from exc
    missing = [p for p in image.platforms if p not in locked]
    if missing:
        raise ServiceFailed(f"{where}: pex gave no resolve for {', '.join(missing)}; lock again")
    parts = [_platform_lock(p, locked[p], pins[p], image, where) for p in image.platforms]
    body = lock_body(declared, sha256_digest(image.python_lock), parts, PEX_VERSION)
    data = lock_bytes(body)
    _, bad = parse_lock(data, LOCK_FILE)
    if bad:  # our own output must read back clean
        raise ServiceFailed(f"{where}: the new lock does not read back: {bad[0]}")
    cache = Cache(cache_dir)
    total = 0
    wheels = {w.digest: w for part in parts for w in part.wheels}
    for wheel in wheels.values():
        total += len(
            fetch_verified(
                cache, wheel.url, wheel.sha256, f"{where}: {wheel.filename}", relock_hint(bundle)
            )
        )
    written = bundle / LOCK_FILE
    write_bytes(written, data)
    wheel_counts = per_platform({p.platform: len(p.wheels) for p in parts}, "wheel(s)")
    provided = per_platform(
        {p.platform: len(locked[p.platform]) - len(p.wheels) for p in parts}, "project(s)"
    )
    progress(
        f"locked {wheel_counts} ({total / 1e6:.1f} MB, in the cache), {provided} "
        "provided by the image"
    )
    return written


def _platform_lock(
    platform: str,
    locked: Sequence[image_lock.LockedWheel],
    pins: dict[str, str],
    image: LockBase,
    where: str,
) -> PlatformLock:
    """``platform``'s part of the lock: the resolve's wheels less the image's projects."""
    tags = image.tags(platform)
    wheels: list[LockedWheel] = []
    for w in locked:
        name = normalize_name(w.project)
        if name in pins:
            if pins[name] != w.version:  # the constraint makes this impossible; never trust it
                raise BadInput(
                    f"{where}: the resolve chose {name} {w.version} for {platform}, but the "
                    f"image pins {name}=={pins[name]}; a bundle cannot replace what the image pins"
                )
            continue
        parsed = parse_wheel_name(w.filename)
        if parsed is None or not parsed.fits(set(tags)):
            raise BadInput(f"{where}: {w.filename} is not a wheel for the image's {platform}")
        wheels.append(LockedWheel(name, w.version, w.filename, w.url, w.sha256))
    return PlatformLock(
        platform,
        sha256_digest(image.complete_platforms[platform]),
        pins,
        tuple(tags),
        tuple(wheels),
    )


def _lock_error(exc: LockstepError, cache_dir: Path, where: str) -> LockstepError:
    """pex's failure as one line about the bundle (its log has the whole output)."""
    log = cache_dir / "logs" / "pex-bundle-lock.log"
    try:
        output = log.read_text()
    except OSError:
        output = ""
    conflict = _conflict(output)
    if conflict:
        return BadInput(
            f"{where}: the requirements conflict with the image: {conflict}; a bundle "
            f"cannot replace what the image pins (details: {log})"
        )
    if isinstance(exc, BadInput):
        missing = re.search(r"No matching distribution found for ([^\n]+)", output)
        what = missing.group(1).strip() if missing else exc.message.split(": ", 1)[-1]
        return BadInput(
            f"{where}: no wheel for the image's python and platform satisfies {what} "
            f"(sdists are never built for a bundle); require a version with a wheel "
            f"(details: {log})"
        )
    return exc


def describe(lock_path: Path) -> str:
    """A summary line of a written lock."""
    data = json.loads(lock_path.read_bytes())
    counts = per_platform({n: len(p["wheels"]) for n, p in data["platforms"].items()}, "wheel(s)")
    return f"{lock_path}: {counts}, content {data['content_digest']}"

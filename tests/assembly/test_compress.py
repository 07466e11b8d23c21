"""Layer compression: one gzip member, the same bytes for any thread count and on any host."""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lockstep.assembly import compress
from lockstep.assembly.thirdparty import LARGE_WHEEL, SMALL_GROUPS, WheelGroup, plan_layers
from lockstep.inputs.python.lock import LockedWheel
from tests.fixtures.build import Built, build, downloads_only

SHIM = """\
import sys
from zlib_ng import zlib_ng
sys.modules["zlib"] = zlib_ng  # the host's deflate, swapped
import gzip  # noqa: E402
gzip.zlib = zlib_ng
"""


def _data(size: int) -> bytes:
    rng = random.Random(7)  # text-like: compressible, and not periodic
    words = [bytes(rng.choice(b"abcdefghij klmnop\n") for _ in range(rng.randrange(2, 12)))
             for _ in range(500)]  # fmt: skip
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


@pytest.mark.parametrize("size", [0, 1, compress.BLOCK - 1, compress.BLOCK, 3 * compress.BLOCK + 5])
def test_round_trip_and_thread_count_does_not_change_the_bytes(size: int) -> None:
    data = _data(size)
    one = compress.gzip_bytes(data, threads=1)
    assert gzip.decompress(one) == data
    assert compress.gzip_bytes(data, threads=2) == one == compress.gzip_bytes(data, threads=4)
    assert one[:10] == compress.HEADER  # mtime 0, no name


def test_the_ratio_is_that_of_one_stream() -> None:
    """Blocks are primed with the previous window, so cutting costs almost nothing."""
    data = _data(4 * compress.BLOCK)
    one_stream = gzip.compress(data, compresslevel=compress.LEVEL, mtime=0)
    assert len(compress.gzip_bytes(data)) < 1.02 * len(one_stream)


def test_another_compressor_is_another_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers compressed otherwise are other bytes: the build id must change with the compressor."""
    from lockstep.assembly.identity import builder_identity
    from lockstep.manifest import BuildManifest

    def build_id() -> str:
        inputs = {"builder": builder_identity()} | {
            key: "sha256:" + "0" * 64 for key in ("debian_lock", "python_lock", "sources")
        }
        return BuildManifest(
            name="x", version="1", inputs=inputs, executors=("cold",), python="3.11.2"
        ).build_id

    ours = build_id()
    monkeypatch.setattr(compress, "IDENTITY", "zlib-ng/0.0.0 (python-zlib-ng 0.0.0)")
    assert build_id() != ours


def _shim(tmp_path: Path) -> dict[str, str]:
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SHIM)
    return {"PYTHONPATH": str(shim)}


def test_a_build_with_the_host_deflate_swapped_has_the_same_digests(
    built: Built, tmp_path: Path
) -> None:
    """zlib-ng as the host's zlib (as on Fedora 40+) changes what Python's gzip writes, and
    not what lockstep builds: every layer is compressed again, and the digests are equal."""
    probe = "import gzip, hashlib, sys; sys.stdout.write(hashlib.sha256(gzip.compress(" \
            "open(sys.argv[1], 'rb').read(), mtime=0)).hexdigest())"  # fmt: skip
    sample = built.path("worker")
    host = subprocess.run([sys.executable, "-c", probe, sample], capture_output=True, text=True)
    swapped = subprocess.run(
        [sys.executable, "-c", probe, sample], capture_output=True, text=True,
        env={**os.environ, **_shim(tmp_path)},
    )  # fmt: skip
    assert host.returncode == swapped.returncode == 0
    assert host.stdout != swapped.stdout, "the swap did not change the host's deflate"

    cache = downloads_only(built, tmp_path / "cache")  # every layer is made again
    again = build(built.root, tmp_path / "out", cache, env=_shim(tmp_path))
    assert again.build_id == built.build_id
    for role in ("runner", "worker"):
        assert again.digest(role) == built.digest(role), role
        assert (
            hashlib.sha256(again.path(role).read_bytes()).digest()
            == hashlib.sha256(built.path(role).read_bytes()).digest()
        )


def _wheel(name: str, version: str = "1.0") -> LockedWheel:
    sha = hashlib.sha256(f"{name}-{version}".encode()).hexdigest()
    return LockedWheel(name, version, f"https://files.example/{name}-{version}.whl", sha)


def test_the_layer_plan_moves_only_what_changed() -> None:
    small = [_wheel(f"pkg{i}") for i in range(40)]
    large = [_wheel("numpy"), _wheel("scipy"), _wheel("pyarrow")]
    sizes = {w.sha256: 1000 for w in small} | {w.sha256: LARGE_WHEEL * 4 for w in large}
    plan = plan_layers([*small, *large], sizes)
    assert [g.name for g in plan[:3]] == ["numpy", "pyarrow", "scipy"]  # alone, by name
    assert len(plan) == 3 + SMALL_GROUPS
    # One small wheel changes version: exactly one group changes, nothing moves.
    bumped = [*small[:5], _wheel("pkg5", "2.0"), *small[6:], *large]
    sizes[bumped[5].sha256] = 1000
    after = plan_layers(bumped, sizes)
    changed = [a.name for a, b in zip(plan, after, strict=True) if a != b]
    assert len(changed) == 1 and changed[0].startswith("group-")
    # A large wheel changes version: only its own layer.
    big = [*small, _wheel("numpy", "2.0"), large[1], large[2]]
    sizes[big[40].sha256] = LARGE_WHEEL * 4
    after = plan_layers(big, sizes)
    assert [a.name for a, b in zip(plan, after, strict=True) if a != b] == ["numpy"]


def test_the_number_of_layers_is_bounded() -> None:
    wheels = [_wheel(f"big{i}") for i in range(100)]
    plan = plan_layers(wheels, {w.sha256: LARGE_WHEEL + i for i, w in enumerate(wheels)})
    from lockstep.assembly.thirdparty import MAX_LARGE

    assert len(plan) <= MAX_LARGE + SMALL_GROUPS
    assert sorted(w.project for g in plan for w in g.wheels) == sorted(w.project for w in wheels)


def _named(filename: str) -> LockedWheel:
    name, version = filename.split("-")[:2]
    sha = hashlib.sha256(filename.encode()).hexdigest()
    return LockedWheel(name, version, f"https://files.example/{filename}", sha)


def test_pure_wheels_get_the_same_layers_on_every_platform() -> None:
    pure = [_named(f"pkg{i}-1.0-py3-none-any.whl") for i in range(20)]
    pure.append(_named("bigpure-1.0-py3-none-any.whl"))
    amd = [_named(f"nat{i}-1.0-cp311-cp311-manylinux_2_17_x86_64.whl") for i in range(30)]
    arm = [_named(f"nat{i}-1.0-cp311-cp311-manylinux_2_17_aarch64.whl") for i in range(30)]
    sizes = {w.sha256: 1000 for w in [*pure, *amd, *arm]}
    sizes[pure[-1].sha256] = LARGE_WHEEL
    for w in amd[:2]:  # a binary wheel large on one platform only moves no pure layer
        sizes[w.sha256] = LARGE_WHEEL * 2

    def pure_groups(wheels: list[LockedWheel]) -> list[WheelGroup]:
        return [g for g in plan_layers(wheels, sizes) if g.pure]

    assert pure_groups([*pure, *amd]) == pure_groups([*pure, *arm])
    names = [g.name for g in pure_groups([*pure, *amd])]
    assert names[0] == "bigpure" and all(n.startswith("pure-") for n in names[1:])
    assert not any(g.pure for g in plan_layers(amd, sizes))

"""Prebuilt environment layers: made once on the runner's side, reproducible; on the worker,
extracted as the bytes arrive and used only when the digest matched.

The adversary's layers (``..``, absolute paths, links, devices, a wrong digest, a
truncated stream, too much to unpack) are written here with ``tarfile`` and each is
refused with one line, leaving nothing behind.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from lockstep.bundles import env_layer
from lockstep.bundles.env import EnvStore, WheelRefused
from lockstep.bundles.env_layer import INDEX, INDEX_SCHEMA, LayerRefused, host_platform, host_tag
from lockstep.bundles.format import load_bundle
from lockstep.bundles.lockfile import BundleLock
from lockstep.bundles.prebuilt import env_layer as make_env_layer
from lockstep.core.digests import canonical_json, sha256_digest
from lockstep.core.store import Cache
from tests.bundles.test_env import BUILD, bundle_with, nothing_made, store
from tests.fixtures.procs import PYTHON_LOCK
from tests.fixtures.wheels import make_wheel, wheel_entry, write_lock

DEMO = {"demo/__init__.py": b"VALUE = 41 + 1\n", "demo/tests/test_x.py": b"X = 1\n"}


def made(
    tmp_path: Path, files: dict[str, bytes] = DEMO, data: bytes | None = None
) -> tuple[Path, bytes, str]:
    """A bundle locking one wheel, and its prebuilt layer: (bundle, layer bytes, digest)."""
    data = data or make_wheel(files=files)
    bundle = bundle_with(tmp_path, (data, "demo"))
    loaded, _ = load_bundle(bundle)
    assert loaded is not None
    lock = loaded.lock()
    assert lock is not None
    layer = make_env_layer(lock, lambda _w: data, Cache(tmp_path / "runner"))
    blob = (tmp_path / "runner" / "blobs" / "sha256" / layer.digest[7:]).read_bytes()
    return bundle, blob, layer.digest


def send(s: EnvStore, bundle: Path, blob: bytes, digest: str | None = None, chunk: int = 7):
    sink = s.layer_sink(bundle, digest or sha256_digest(blob), len(blob))
    for i in range(0, len(blob), chunk):
        sink.feed(blob[i : i + chunk])
    return s.adopt(sink)


def test_the_layer_is_reproducible_and_holds_checked_files_and_their_pyc(tmp_path: Path) -> None:
    wheel = make_wheel(files=DEMO)  # its zip members carry the time: made once
    _bundle, blob, digest = made(tmp_path / "a", data=wheel)
    _b, again, digest2 = made(tmp_path / "b", data=wheel)
    assert digest == digest2 and blob == again  # another cache, the same bytes
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile(INDEX).read())  # type: ignore[union-attr]
    assert names[0] == INDEX
    tag = sys.implementation.cache_tag
    assert f"site/demo/__pycache__/__init__.{tag}.pyc" in names
    assert not any("tests/__pycache__" in n for n in names)  # test suites stay sources
    assert index["tag"] == tag and index["platform"] == host_platform() == "linux/amd64"


def test_each_platform_of_the_lock_has_its_own_layer_and_a_worker_takes_only_its_own(
    tmp_path: Path,
) -> None:
    wheels = {
        "linux/amd64": make_wheel(files={"demo/__init__.py": b"ARCH = 'amd64'\n"}),
        "linux/arm64": make_wheel(files={"demo/__init__.py": b"ARCH = 'arm64'\n"}),
    }
    bundle = tmp_path / "bundle"
    write_lock(bundle, [], platforms={p: [wheel_entry(d)] for p, d in wheels.items()})
    loaded, _ = load_bundle(bundle)
    assert loaded is not None
    lock = loaded.lock()
    assert lock is not None
    by_sha = {wheel_entry(d).sha256: d for d in wheels.values()}
    cache = Cache(tmp_path / "runner")
    blobs = {}
    for platform in wheels:  # made here (amd64) for both: a .pyc is the same on any machine
        layer = make_env_layer(lock, lambda w: by_sha[w.sha256], cache, platform=platform)
        assert layer.platform == platform
        blobs[platform] = cache.blob_path(layer.digest).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(blobs["linux/arm64"]), mode="r:gz") as tar:
        index = json.loads(tar.extractfile(INDEX).read())  # type: ignore[union-attr]
    assert index["platform"] == "linux/arm64"
    assert index["wheels"] == [wheel_entry(wheels["linux/arm64"]).filename]
    arm = EnvStore(tmp_path / "arm", BUILD, PYTHON_LOCK, "linux/arm64")
    env = send(arm, bundle, blobs["linux/arm64"])
    assert (env.site / "demo" / "__init__.py").read_text() == "ARCH = 'arm64'\n"
    other = EnvStore(tmp_path / "arm-too", BUILD, PYTHON_LOCK, "linux/arm64")
    with pytest.raises(LayerRefused, match=r"on linux/amd64, this worker runs \S+ on linux/arm64"):
        send(other, bundle, blobs["linux/amd64"])
    assert nothing_made(other)


def test_a_worker_extracts_it_as_it_streams_and_imports_compiled(tmp_path: Path) -> None:
    bundle, blob, digest = made(tmp_path)
    s = store(tmp_path)
    env = send(s, bundle, blob)
    assert env.built and s.status(bundle)["ready"] is True
    marker = json.loads((env.site.parent / "ENV.json").read_bytes())
    assert marker["compiled"] is True and marker["layer"] == digest
    assert s.verify_deep(env.key) == ""  # every file's sha256 is the index's
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(env.site)!r}); "
         "import demo; print(demo.VALUE, demo.__spec__.cached, demo.__file__)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    value, cached, source = out.stdout.split()
    assert value == "42" and Path(cached).is_file() and source == f"{env.site}/demo/__init__.py"
    assert (env.site / "demo").stat().st_mode & 0o777 == 0o555
    found = s.ensure(bundle)  # the per-wheel path finds it ready: nothing made
    assert found is not None and not found.built and found.key == env.key


def _layer(members: list[tuple[tarfile.TarInfo, bytes | None]], index: dict | None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        if index is not None:
            raw = canonical_json(index)
            info = tarfile.TarInfo(INDEX)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _file(name: str, data: bytes = b"x = 1\n") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def _special(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _index(bundle: Path, files: list[list[object]]) -> dict:
    loaded, _ = load_bundle(bundle)
    assert loaded is not None and loaded.lock() is not None
    return {"schema": INDEX_SCHEMA, "lock": loaded.lock().digest, "tag": host_tag(),  # type: ignore[union-attr]
            "platform": host_platform(), "files": files}  # fmt: skip


def _site_dir() -> tuple[tarfile.TarInfo, None]:
    return _special("site", tarfile.DIRTYPE)


@pytest.mark.parametrize(
    ("members", "why"),
    [
        (
            [_site_dir(), _file("site/../escape.py")],
            r"'site/\.\./escape\.py', not a plain relative",
        ),
        ([_file("/etc/evil")], r"'/etc/evil', not a plain relative path"),
        ([_file("elsewhere.py")], r"'elsewhere\.py', not a plain relative path under site/"),
        ([_site_dir(), _special("site/out", tarfile.SYMTYPE, "/etc")], r"'site/out', a link"),
        ([_site_dir(), _file("site/a"), _special("site/b", tarfile.LNKTYPE, "site/a")], "a link"),
        ([_site_dir(), _special("site/dev", tarfile.CHRTYPE)], "not a regular file"),
        ([_site_dir(), _special("site/fifo", tarfile.FIFOTYPE)], "not a regular file"),
        ([_site_dir(), _file("site/a"), _file("site/a")], r"holds 'site/a' twice"),
        ([_site_dir(), _file("site/a"), _file("site/a/b")], "below no directory of its own"),
        ([_site_dir(), _file("site/a.py")], r"what it holds is not what its LAYER\.json lists"),
    ],
)
def test_an_unsafe_layer_is_refused_and_nothing_is_left(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], why: str
) -> None:
    bundle = bundle_with(tmp_path, (make_wheel(), "demo"))
    blob = _layer(members, _index(bundle, []))
    s = store(tmp_path)
    with pytest.raises(LayerRefused, match=why) as caught:
        send(s, bundle, blob)
    assert "\n" not in str(caught.value) and "refused, nothing of it is used" in str(caught.value)
    assert nothing_made(s)
    assert not (tmp_path / "escape.py").exists()


def test_a_tar_the_builder_never_writes_is_refused(tmp_path: Path) -> None:
    """The worker reads the builder's GNU tar only (``bundles/layer_tar.py``): a pax header
    is a member it does not take, and a header whose checksum does not add up is no tar."""
    import gzip

    bundle = bundle_with(tmp_path, (make_wheel(), "demo"))
    raw = canonical_json(_index(bundle, []))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(INDEX)
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
        tar.addfile(_site_dir()[0])
        long = tarfile.TarInfo("site/" + "p" * 120)
        tar.addfile(long, io.BytesIO(b""))
    s = store(tmp_path)
    with pytest.raises(LayerRefused, match=r"'\./\./@PaxHeader', not a plain relative"):
        send(s, bundle, gzip.compress(out.getvalue(), mtime=0))
    assert nothing_made(s)
    plain = bytearray(gzip.decompress(_layer([_site_dir()], _index(bundle, []))))
    second = 512 + -(-len(raw) // 512) * 512  # the site directory's header, after the index
    plain[second + 2] ^= 0x01  # a byte of its name; its checksum as it was
    with pytest.raises(LayerRefused, match=r"does not read as a tar \(a header's checksum"):
        send(s, bundle, gzip.compress(bytes(plain), mtime=0))
    assert nothing_made(s)
    assert send(s, bundle, _layer([_site_dir()], _index(bundle, []))).built


def test_a_wrong_digest_a_truncated_or_long_stream_are_refused(tmp_path: Path) -> None:
    bundle, blob, digest = made(tmp_path)
    s = store(tmp_path)
    with pytest.raises(LayerRefused, match=r"its bytes have the digest sha256:"):
        send(s, bundle, blob, digest="sha256:" + "0" * 64)
    assert nothing_made(s)
    sink = s.layer_sink(bundle, digest, len(blob))
    sink.feed(blob[: len(blob) // 2])
    with pytest.raises(LayerRefused, match=r"truncated: \d+ of its \d+ bytes arrived"):
        s.adopt(sink)
    assert nothing_made(s)
    sink = s.layer_sink(bundle, digest, len(blob) - 1)
    with pytest.raises(LayerRefused, match="more than the"):
        sink.feed(blob)
    assert nothing_made(s)
    tampered = bytearray(blob)
    tampered[len(blob) // 2] ^= 0xFF  # the stream itself is broken: refused, with the digest
    with pytest.raises(LayerRefused):
        send(s, bundle, bytes(tampered), digest=digest)
    assert nothing_made(s)
    assert send(s, bundle, blob).built  # and the honest layer still goes in


def test_a_huge_layer_is_refused_before_a_byte_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, blob, digest = made(tmp_path)
    s = store(tmp_path)
    with pytest.raises(LayerRefused, match="a layer is 1 to"):
        s.layer_sink(bundle, digest, env_layer.MAX_LAYER_BYTES + 1)
    monkeypatch.setattr(env_layer, "MAX_ENV_BYTES", 10)
    with pytest.raises(LayerRefused, match="it unpacks to more than 10 bytes"):
        send(s, bundle, blob)
    assert nothing_made(s)


def test_a_layer_for_another_lock_or_interpreter_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, blob, _digest = made(tmp_path / "one")
    other = bundle_with(tmp_path, (make_wheel(files={"demo/__init__.py": b"X = 2\n"}), "demo"))
    s = store(tmp_path)
    with pytest.raises(LayerRefused, match="it was made for the lock sha256:"):
        send(s, other, blob)
    monkeypatch.setattr(env_layer, "host_tag", lambda: "cpython-399")
    with pytest.raises(LayerRefused, match="this worker runs cpython-399 on linux/amd64"):
        send(s, bundle, blob)
    assert nothing_made(s)


def test_an_unsafe_wheel_makes_no_layer(tmp_path: Path) -> None:
    data = make_wheel(lie={"demo/evil.py": b"import os\n"})
    bundle = bundle_with(tmp_path, (data, "demo"))
    loaded, _ = load_bundle(bundle)
    assert loaded is not None and loaded.lock() is not None
    with pytest.raises(WheelRefused, match="refused"):
        make_env_layer(loaded.lock(), lambda _w: data, Cache(tmp_path / "runner"))  # type: ignore[arg-type]


def test_a_lock_for_another_python_is_refused_before_anything_is_compiled(
    tmp_path: Path,
) -> None:
    """The layer is compiled for the image's Python, named by the lock's wheel tags: a
    running Python with another cache tag is refused with one line (exit 2), not made into
    a layer no worker of the image could use."""
    import dataclasses

    from lockstep.core.errors import BadInput

    data = make_wheel(files=DEMO)
    bundle = bundle_with(tmp_path, (data, "demo"))
    loaded, _ = load_bundle(bundle)
    assert loaded is not None and loaded.lock() is not None
    lock = loaded.lock()
    assert lock is not None

    def tagged(tag: str) -> BundleLock:  # the lock with its platform's tags replaced
        parts = {p: dataclasses.replace(x, platform_tags=(tag,)) for p, x in lock.platforms.items()}
        return dataclasses.replace(lock, platforms=parts)

    other = tagged("cp399-cp399-manylinux_2_17_x86_64")
    with pytest.raises(BadInput) as refused:
        make_env_layer(other, lambda _w: data, Cache(tmp_path / "runner"))
    line = str(refused.value)
    assert "\n" not in line and refused.value.exit_code == 2
    assert "cpython-399" in line and host_tag() in line and "--prebuilt" in line
    assert not (tmp_path / "runner" / "blobs").exists()  # nothing made
    ours = host_tag().removeprefix("cpython-")
    same = tagged(f"cp{ours}-cp{ours}-manylinux_2_17_x86_64")
    assert make_env_layer(same, lambda _w: data, Cache(tmp_path / "runner")).tag == host_tag()


def test_the_receiving_side_waits_while_the_extraction_is_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded memory on the worker: with the files not being written (a slow disk, here a
    writer held back), feeding stops once ``PIPE_BYTES`` of inflated bytes wait, instead
    of the whole environment piling up in memory; it goes on when the writer does."""
    import threading

    big = {"demo/__init__.py": b"V = 1\n", "demo/data.bin": bytes(24 << 20)}
    bundle, blob, digest = made(tmp_path, big)
    monkeypatch.setattr(env_layer, "PIPE_BYTES", 2 << 20)
    writing, waited = threading.Event(), threading.Event()
    write = env_layer._write

    def held_back(path: Path, pieces: Any) -> Any:
        assert writing.wait(120)
        return write(path, pieces)

    monkeypatch.setattr(env_layer, "_write", held_back)
    feeder: list[threading.Thread] = []
    pipe_init = env_layer._Pipe.__init__

    class Watched(threading.Condition):
        def wait(self, timeout: float | None = None) -> bool:
            if feeder and threading.current_thread() is feeder[0]:
                waited.set()
            return super().wait(timeout)

    def init(self: Any) -> None:
        pipe_init(self)
        self._cond = Watched()

    monkeypatch.setattr(env_layer._Pipe, "__init__", init)
    s = store(tmp_path)
    sink = s.layer_sink(bundle, digest, len(blob))
    feeder.append(threading.Thread(target=sink.feed, args=(blob,)))
    feeder[0].start()
    assert waited.wait(120)  # the feeder waits for the extraction
    assert sink._pipe._held <= env_layer.PIPE_BYTES + env_layer._COPY
    writing.set()
    feeder[0].join(120)
    assert not feeder[0].is_alive()
    env = s.adopt(sink)
    assert (env.site / "demo" / "data.bin").stat().st_size == 24 << 20


def test_the_running_pythons_tag_is_read_without_starting_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every shipment of a prebuilt layer asks for the tag: the running interpreter's is its
    own ``sys.implementation.cache_tag``, no process started."""
    from lockstep.bundles.prebuilt import cache_tag, running_python

    def no_process(*_a: object, **_k: object) -> None:
        raise AssertionError("a process was started")

    monkeypatch.setattr(subprocess, "run", no_process)
    assert cache_tag(running_python()) == sys.implementation.cache_tag


def test_an_extraction_that_breaks_unexpectedly_never_leaves_the_sender_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No hang: if the extracting thread ends on an error nobody foresaw (a bug, not the
    layer), the receiving side is not left waiting on a full pipe. The layer is refused
    with the error named, and nothing of it is left."""
    import threading

    big = {"demo/__init__.py": b"V = 1\n", "demo/data.bin": bytes(24 << 20)}
    bundle, blob, digest = made(tmp_path, big)
    monkeypatch.setattr(env_layer, "PIPE_BYTES", 2 << 20)
    reader_next = env_layer.layer_tar.Reader.next
    seen: list[object] = []

    def broken(self: Any) -> Any:
        member = reader_next(self)
        seen.append(member)
        if len(seen) == 3:
            raise KeyError("an unforeseen bug")
        return member

    monkeypatch.setattr(env_layer.layer_tar.Reader, "next", broken)
    s = store(tmp_path)
    sink = s.layer_sink(bundle, digest, len(blob))
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            for i in range(0, len(blob), 1 << 20):
                sink.feed(blob[i : i + (1 << 20)])
            s.adopt(sink)
        except BaseException as exc:  # the test reads it
            errors.append(exc)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    feeder.join(120)
    assert not feeder.is_alive(), "the receiving side waits forever on a full pipe"
    assert len(errors) == 1 and isinstance(errors[0], LayerRefused), errors
    assert "KeyError" in str(errors[0]) and "an unforeseen bug" in str(errors[0])
    assert nothing_made(s)

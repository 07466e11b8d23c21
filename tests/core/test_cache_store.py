"""The content-addressed cache: every read verified, by a hash or by the stamp of one.

A stamp (``core/stamps.py``) is what ``stat`` said when the blob's bytes were last
hashed. These tests make a stamp "as if" hashed long ago by giving ``hashed`` the
time a later build would have (the file system's ctime cannot be set back), then
change the blob the ways a file changes: each must be caught.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lockstep.core import store
from lockstep.core.digests import sha256_digest
from lockstep.core.stamps import RACY_NS, Stamp, stampable
from lockstep.core.store import Cache, copy_range

DATA = b"layer bytes " * 1000


def old_stamp(cache: Cache, digest: str) -> None:
    """Stamp the blob as a build hashing it ``RACY_NS`` after its last change would."""
    st = cache.blob_path(digest).stat()
    cache.stamps.hashed(digest, Stamp.of(st), st.st_ctime_ns + RACY_NS)


def stamped(tmp_path: Path) -> tuple[Path, str]:
    """A cache root holding one blob with a kept stamp; a fresh process's view of it."""
    digest = Cache(tmp_path).put_blob(DATA)
    old_stamp(Cache(tmp_path), digest)
    return tmp_path, digest


class Hashes:
    """Counts the sha256 objects the store makes (its only way to hash)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = hashlib.sha256

        def counting(*args: bytes) -> hashlib._Hash:
            self.count += 1
            return real(*args)

        monkeypatch.setattr(store.hashlib, "sha256", counting)
        monkeypatch.setattr(store, "sha256_digest", lambda d: "sha256:" + counting(d).hexdigest())


def test_stampable_only_when_the_last_change_is_older_than_the_racy_window() -> None:
    st = Stamp(dev=1, ino=2, size=3, mtime_ns=10, ctime_ns=10)
    assert stampable(st, 10 + RACY_NS)
    assert not stampable(st, 10 + RACY_NS - 1)  # a change in the same tick would look the same


def test_a_fresh_blob_is_hashed_once_and_not_stamped_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = Cache(tmp_path).put_blob(DATA)
    hashes = Hashes(monkeypatch)
    reader = Cache(tmp_path)  # another process: trusts nothing it did not see
    ctime = reader.blob_path(digest).stat().st_ctime_ns  # read within the racy window
    monkeypatch.setattr(store.time, "time_ns", lambda: ctime + RACY_NS - 1)
    assert reader.get_blob(digest) == DATA
    assert hashes.count == 1
    assert not reader.stamps.path(digest).exists()  # written just now: racy, not kept
    assert reader.get_blob(digest) == DATA  # this process hashed it: trusted
    assert reader.size_of(digest) == len(DATA)
    assert hashes.count == 1


def test_a_stamped_blob_is_read_copied_and_sized_without_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, digest = stamped(tmp_path)
    hashes = Hashes(monkeypatch)
    cache = Cache(root)
    assert cache.get_blob(digest) == DATA
    assert cache.size_of(digest) == len(DATA)
    out = tmp_path / "out"
    with out.open("wb") as f:
        f.write(b"head")
        f.flush()
        assert cache.copy_blob(digest, f.fileno())
    assert out.read_bytes() == b"head" + DATA
    assert hashes.count == 0


def test_a_forged_stamp_is_believed(tmp_path: Path) -> None:
    """What a stamp cannot do (docs/design.md): whoever writes the cache can rewrite the
    stamp too, as they could rewrite a layer record."""
    root, digest = stamped(tmp_path)
    path = Cache(root).blob_path(digest)
    path.write_bytes(DATA.upper())
    old_stamp(Cache(root), digest)  # the forger's stamp
    assert Cache(root).get_blob(digest) == DATA.upper()


def _in_place(path: Path) -> None:
    """One byte changed in place, the size and the mtime as they were."""
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(len(DATA) // 2)
        f.write(b"X")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _replaced(path: Path) -> None:
    """Another file of the same size renamed over it, the mtime as it was."""
    st = path.stat()
    other = path.with_name("other")
    other.write_bytes(DATA.replace(b"layer", b"LAYER", 1))
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, path)


def _truncated(path: Path) -> None:
    os.truncate(path, len(DATA) - 1)


def _touched(path: Path) -> None:
    """The same bytes, its metadata changed (chmod): hashed again, and still good."""
    path.chmod(0o600)


@pytest.mark.parametrize("change", [_in_place, _replaced, _truncated])
@pytest.mark.parametrize("how", ["get_blob", "size_of", "copy_blob"])
def test_a_changed_blob_breaks_its_stamp_and_is_removed(
    tmp_path: Path, change: object, how: str
) -> None:
    root, digest = stamped(tmp_path)
    cache = Cache(root)
    path = cache.blob_path(digest)
    assert callable(change)
    change(path)
    if how == "copy_blob":
        out = tmp_path / "out"
        with out.open("wb") as f:
            f.write(b"head")
            f.flush()
            assert not cache.copy_blob(digest, f.fileno())
            assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == 4  # nothing appended
        assert out.read_bytes() == b"head"
    else:
        assert getattr(cache, how)(digest) is None
    assert not path.exists()
    assert not cache.stamps.path(digest).exists()


def test_a_blob_whose_metadata_changed_is_hashed_again_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, digest = stamped(tmp_path)
    _touched(Cache(root).blob_path(digest))
    hashes = Hashes(monkeypatch)
    assert Cache(root).get_blob(digest) == DATA
    assert hashes.count == 1


def test_copy_range_falls_back_to_reading_where_the_kernel_cannot(tmp_path: Path) -> None:
    read, write = os.pipe()  # copy_file_range refuses a pipe
    os.write(write, DATA)
    os.close(write)
    out = tmp_path / "out"
    with out.open("wb") as f:
        copy_range(read, f.fileno(), len(DATA))
    os.close(read)
    assert out.read_bytes() == DATA
    assert sha256_digest(out.read_bytes()) == sha256_digest(DATA)


def test_a_blob_hashed_after_its_racy_window_is_stamped_for_the_next_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = Cache(tmp_path).put_blob(DATA)
    ctime = Cache(tmp_path).blob_path(digest).stat().st_ctime_ns
    monkeypatch.setattr(store.time, "time_ns", lambda: ctime + RACY_NS)  # 2 s after the write
    hashes = Hashes(monkeypatch)
    assert Cache(tmp_path).get_blob(digest) == DATA  # hashed, and the stamp kept
    assert Cache(tmp_path).stamps.path(digest).exists()
    assert Cache(tmp_path).get_blob(digest) == DATA  # the next process: trusted
    assert hashes.count == 1

"""The worker's bundle store: a digest's files verified, cached read-only, refused if not
those of the digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockstep.bundles.format import load_bundle
from lockstep.bundles.store import BundleRefused, BundleStore, from_wire, read_tree, to_wire
from lockstep.core.digests import TreeFile, tree_digest
from tests.jobs.test_jobs_units import copy_example


def test_store_verifies_caches_and_refuses(tmp_path: Path) -> None:
    spec = copy_example(tmp_path)
    bundle, _ = load_bundle(spec.parent / "bundle")
    assert bundle is not None
    store = BundleStore(tmp_path / "cache")
    store.prepare()
    files = from_wire(to_wire(bundle.files))
    with pytest.raises(BundleRefused) as partial:
        store.put(bundle.digest, files[:-1])
    assert bundle.digest in str(partial.value) and "partial" in str(partial.value)
    tampered = [*files[:-1], TreeFile(files[-1].path, False, files[-1].data + b"#")]
    with pytest.raises(BundleRefused, match="changed after its digest was taken"):
        store.put(bundle.digest, tampered)
    assert store.has(bundle.digest) is None and not any((tmp_path / "cache").iterdir())
    path = store.put(bundle.digest, files)
    assert path == store.path(bundle.digest) == store.has(bundle.digest)
    assert tree_digest(read_tree(path)[0]) == bundle.digest
    assert store.put(bundle.digest, files) == path  # a second put is a no-op
    # A cached copy changed on disk is noticed when a runner asks, removed, and sent again.
    model = path / "sir" / "model.py"
    model.chmod(0o644)
    model.write_text("def simulate(params, seed):\n    return {}\n")
    assert store.has(bundle.digest) is None and not path.exists()
    for bad in (
        [["../evil.py", False, b""]],
        [["/abs.py", False, b""]],
        "nope",
        [["a.py", False, "text, not bytes"]],
    ):
        with pytest.raises(BundleRefused):
            from_wire(bad)
    with pytest.raises(BundleRefused, match="not sha256"):
        store.has("sha256:xyz")

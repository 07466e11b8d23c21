"""``lockstep build`` writes the build manifest beside its archives, and the runtime runs
from it outside any container: ``LOCKSTEP_MANIFEST=out/manifest.json``."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from lockstep.assembly import oci
from lockstep.core.settings import MANIFEST_PATH
from tests.fixtures.build import Built
from tests.fixtures.procs import base_env, lockstep, start_scheduler, start_worker

pytestmark = pytest.mark.slow


def _image_manifest(archive: Path) -> bytes:
    """The bytes of /etc/lockstep/manifest.json in the archive's top layer."""
    image = oci.read_archive(archive)
    top = image.blob(image.manifest["layers"][-1]["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(top))) as layer:
        found = layer.extractfile(MANIFEST_PATH.lstrip("/"))
        assert found is not None
        return found.read()


def test_build_writes_the_images_manifest_beside_its_outputs(built: Built) -> None:
    written = Path(built.result["manifest"])
    assert written == built.out / "manifest.json"
    assert written.read_bytes() == _image_manifest(built.path("worker"))
    assert written.read_bytes() == _image_manifest(built.path("runner"))
    assert not list(built.out.glob(".*.tmp"))  # written under a temporary name, renamed


def test_scheduler_worker_and_runner_run_from_the_written_manifest(
    built: Built, tmp_path: Path
) -> None:
    manifest = built.out / "manifest.json"
    scheduler, address = start_scheduler(tmp_path, manifest)
    worker = start_worker(tmp_path, address, manifest, "isolated_warm", "w-out")
    try:
        worker.wait_for("lockstep worker ready", timeout=90)
        runner = subprocess.run(
            lockstep("runner", address, "--workers", "1", "--timeout", "60"),
            env=base_env(manifest),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert runner.returncode == 0, runner.stderr[-3000:]
        assert built.build_id[7:19] in runner.stdout
        assert "other build" not in runner.stdout
    finally:
        worker.stop()
        scheduler.stop()

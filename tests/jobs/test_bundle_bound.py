"""Issue #26 item 4: a bundle over the size limit is refused while it is walked, before
its files are in memory (a 300 MB file is not read to find out it is too large)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lockstep.bundles.format import MAX_BUNDLE_BYTES

# The peak is this process's own (VmHWM of its memory map): ru_maxrss would also count the
# parent's peak, which Linux carries across the exec of a vforked child.
PROBE = """
import json, sys
from pathlib import Path
from lockstep.bundles.format import load_bundle
bundle, problems = load_bundle(Path(sys.argv[1]))
peak = next(int(line.split()[1]) for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps({"problems": problems, "maxrss_kib": peak}))
"""


def test_a_bundle_over_the_limit_is_refused_without_reading_it(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    root.mkdir()
    (root / "model.py").write_text("X = 1\n")
    with (root / "data.bin").open("wb") as f:  # sparse: no disk, 300 MB when read
        f.truncate(300 * 2**20)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(root)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    messages = [message for _, message in found["problems"]]
    assert any(f"more than {MAX_BUNDLE_BYTES}" in m for m in messages), messages
    assert found["maxrss_kib"] < 150 * 1024, found  # the 300 MB were never read


def test_a_fifo_in_a_bundle_is_named_not_read(tmp_path: Path) -> None:
    from lockstep.bundles.format import load_bundle

    root = tmp_path / "bundle"
    root.mkdir()
    (root / "model.py").write_text("X = 1\n")
    os.mkfifo(root / "pipe")
    _, problems = load_bundle(root)
    assert [p for p in problems if p[0] == str(root / "pipe")] == [
        (
            str(root / "pipe"),
            "is not a regular file; a bundle holds only regular files (its digest covers "
            "contents, not links): replace it with the file",
        )
    ]

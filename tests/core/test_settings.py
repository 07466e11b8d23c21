"""One table of environment variables: the docs show it, the code names nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from lockstep.core.settings import SETTINGS, settings_table

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "lockstep"
NAME = re.compile(r"\bLOCKSTEP_[A-Z_]*[A-Z]\b")  # LOCKSTEP_TLS_* names a family


def test_reference_page_shows_exactly_the_settings_table() -> None:
    page = (ROOT / "docs" / "reference" / "environment.md").read_text()
    assert settings_table() in page, "run `.venv/bin/python tools/reference.py` and commit"


def test_design_shows_exactly_the_settings_table() -> None:
    design = (ROOT / "docs" / "design.md").read_text()
    section = design[design.index("### 4.4 Settings") : design.index("### 4.5")]
    assert settings_table() in section, "regenerate docs/design.md §4.4 from settings_table()"


def test_every_variable_the_code_mentions_is_in_the_table() -> None:
    known = {s.name for s in SETTINGS}
    for path in sorted(SRC.rglob("*.py")):
        found = set(NAME.findall(path.read_text())) - known
        assert not found, f"{path.relative_to(ROOT)} names {sorted(found)}, not in SETTINGS"


def test_names_are_spelled_only_in_the_settings_module() -> None:
    """Code uses the constants; a quoted name anywhere else would be a second definition."""
    quoted = re.compile(r"[\"']LOCKSTEP_[A-Z_]*[A-Z]\b")
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "settings.py" and path.parent.name == "core":
            continue
        hits = quoted.findall(path.read_text())
        assert not hits, f"{path.relative_to(ROOT)} spells {hits}; import it from core.settings"

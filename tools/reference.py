"""The generated reference pages: every command and option, every environment variable.

docs/reference/cli.md is rendered from the CLI's own argparse parsers
(``lockstep.cli.make_parser``), docs/reference/environment.md from
``lockstep.core.settings.SETTINGS``. Nothing in them is written by hand, so they
cannot drift from the code: tests/test_docs.py runs this with ``--check``.

    .venv/bin/python tools/reference.py           # write both pages
    .venv/bin/python tools/reference.py --check   # exit 1 naming each page that differs

The rendering reads the parsers' actions, not argparse's help formatter, whose
layout changes between Python versions and terminal widths.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from lockstep.cli import make_parser
from lockstep.core.settings import settings_table

ROOT = Path(__file__).resolve().parents[1]
CLI_PAGE = ROOT / "docs" / "reference" / "cli.md"
ENV_PAGE = ROOT / "docs" / "reference" / "environment.md"
REGENERATE = ".venv/bin/python tools/reference.py"

CLI_HEAD = f"""# Commands and options

Generated from the CLI's own parsers by `{REGENERATE}`; a test fails when this
page differs from them. `lockstep COMMAND --help` prints the same.
Exit codes: 0 ok, 1 a check failed, 2 bad input, 3 an outside service failed
(docs/design.md §4.3).

"""

ENV_HEAD = f"""# Environment variables

Generated from `lockstep.core.settings` by `{REGENERATE}`; a test fails when this
page differs from it. Each setting is read by the process that uses it and logged
once at start-up.

"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _metavar(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        name = action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
    elif action.choices is not None and not action.option_strings:
        name = action.dest
    else:
        name = action.dest.upper() if action.option_strings else action.dest
    if action.nargs == argparse.REMAINDER:
        return "..."
    if action.nargs in ("*", "+"):
        return f"{name} ..."
    return name


def _usage_part(action: argparse.Action) -> str:
    metavar = _metavar(action)
    if action.option_strings:
        flag = max(action.option_strings, key=len)
        text = f"{flag} {metavar}".strip()
        return text if action.required else f"[{text}]"
    return f"[{metavar}]" if action.nargs in ("?", "*") else metavar


def _meaning(action: argparse.Action) -> str:
    parts = [_cell(action.help or "")]
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        parts.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
    if action.nargs == argparse.REMAINDER:
        parts.append("passed on as they are")
    return "; ".join(p for p in parts if p)


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if a.help != argparse.SUPPRESS
        and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
    ]


def _subcommands(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help or "" for c in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _command(path: str, summary: str, parser: argparse.ArgumentParser) -> Iterator[str]:
    actions = _visible(parser)
    subs = list(_subcommands(parser))
    nested = [a.metavar for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    usage = " ".join([path, *(_usage_part(a) for a in actions), *(f"{m} ..." for m in nested)])
    yield f"## `{path}`\n"
    if summary:
        yield _cell(summary) + "\n"
    yield f"```text\n{usage}\n```\n"
    if actions:
        yield "| argument | meaning |\n|---|---|"
        for action in actions:
            name = ", ".join(action.option_strings) or _metavar(action)
            metavar = _metavar(action) if action.option_strings else ""
            shown = _cell(f"`{name} {metavar}`" if metavar else f"`{name}`")
            yield f"| {shown} | {_meaning(action)} |"
        yield ""
    for name, help_text, sub in subs:
        yield from _command(f"{path} {name}", help_text, sub)


def cli_reference() -> str:
    parser = make_parser()
    lines = [CLI_HEAD.rstrip("\n") + "\n"]
    lines += list(_command("lockstep", parser.description or "", parser))
    return "\n".join(lines).rstrip("\n") + "\n"


def environment_reference() -> str:
    return ENV_HEAD + settings_table() + "\n"


PAGES = {CLI_PAGE: cli_reference, ENV_PAGE: environment_reference}


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print(f"usage: {REGENERATE} [--check]", file=sys.stderr)
        return 2
    stale = []
    for page, render in PAGES.items():
        text = render()
        current = page.read_text() if page.exists() else None
        if current == text:
            continue
        if check:
            stale.append(str(page.relative_to(ROOT)))
        else:
            page.parent.mkdir(parents=True, exist_ok=True)
            tmp = page.with_name(f".{page.name}.tmp")
            tmp.write_text(text)
            tmp.replace(page)
            print(f"wrote {page.relative_to(ROOT)}")
    if stale:
        print(
            f"{', '.join(stale)}: differ from the code; run `{REGENERATE}` and commit",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

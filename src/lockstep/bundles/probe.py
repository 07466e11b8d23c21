"""Import check of entry points in a fresh, isolated interpreter (the preflight's probe).

``run_probe(paths, checks)`` starts ``python -I -B`` on this very file, with
the directories in ``paths`` (a job bundle) first on ``sys.path``, in an empty
working directory. The probe imports each check's module, looks up its
callable and tries to bind the argument names the check gives
(``inspect.Signature.bind``), then writes one JSON answer to a file. Nothing
of the imported code reaches the caller's process: a bundle's import side
effects (prints, ``sys.exit``, writes to the working directory, a crash) stay
in the probe, and a crash or a hang is reported as a problem.

Runs on the runner (``lockstep preflight``) and on a worker (its
``lockstep_bundle_check`` handler). Stdlib only: the probe side runs this file
by path, without importing lockstep.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT = 60.0


def run_probe(
    paths: Sequence[str], checks: Sequence[dict[str, Any]], timeout: float = DEFAULT_TIMEOUT
) -> list[dict[str, Any]]:
    """Check every ``{"role", "ref": "module:callable", "args": [names]}`` in ``checks``.

    Returns one ``{"role", "ref", "ok", "problem", "file"}`` per check, in order
    (``file``: the module's file, when it was found). A probe that crashes or hangs
    is blamed on the check it was doing (and on later checks of the same module);
    the checks after it are probed again in a fresh process, so a healthy target
    is not blamed for a model whose import loops.
    """
    results: list[dict[str, Any]] = []
    left = list(checks)
    while left:
        done, problem = _probe_once(paths, left, timeout)
        results.extend(done)
        left = left[len(done) :]
        if left and problem:
            stuck = _module(left[0])
            while left and _module(left[0]) == stuck:
                results.append(_failed(left.pop(0), problem))
    return results


def _probe_once(
    paths: Sequence[str], checks: Sequence[dict[str, Any]], timeout: float
) -> tuple[list[dict[str, Any]], str | None]:
    """The results of one probe process, in order, as far as it got; and why it stopped
    early (None if it answered every check)."""
    with tempfile.TemporaryDirectory(prefix="lockstep-probe-") as tmp:
        answer = Path(tmp) / "answer.json"
        request = json.dumps({"paths": list(paths), "checks": list(checks)})
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-B", __file__, str(answer)],
                input=request,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=tmp,
            )
        except subprocess.TimeoutExpired:
            return _answered(answer), (
                f"importing it did not finish within {timeout:g} s "
                "(an import that waits or loops); fix the module"
            )
        results = _answered(answer)
        if len(results) == len(checks):
            return results, None
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or "no output"
        return results, (
            f"the import check's process ended with code "
            f"{proc.returncode} before answering ({tail})"
        )


def _answered(answer: Path) -> list[dict[str, Any]]:
    """The results the probe wrote to ``answer`` before it ended or was stopped."""
    try:
        results: list[dict[str, Any]] = json.loads(answer.read_text())["results"]
    except (OSError, ValueError, KeyError):
        return []
    return results


def _module(check: dict[str, Any]) -> str:
    return str(check["ref"]).partition(":")[0]


def _failed(check: dict[str, Any], problem: str) -> dict[str, Any]:
    return {
        "role": check["role"],
        "ref": check["ref"],
        "ok": False,
        "problem": problem,
        "file": None,
    }


# --- the probe's side: runs in the fresh interpreter ---------------------------------------


def _where(exc: BaseException) -> str:
    """``file line N`` of the innermost frame of ``exc`` that is not this probe."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename} line {exc.lineno}"
    tb = exc.__traceback__
    last = None
    while tb is not None:
        if (
            tb.tb_frame.f_code.co_filename != __file__
            and not tb.tb_frame.f_code.co_filename.startswith("<frozen")
        ):
            last = tb
        tb = tb.tb_next
    if last is None:
        return ""
    return f"{last.tb_frame.f_code.co_filename} line {last.tb_lineno}"


def _import_problem(module: str, exc: BaseException) -> str:
    import importlib.util

    where = _where(exc)
    at = f" at {where}" if where else ""
    if (
        isinstance(exc, ModuleNotFoundError)
        and exc.name
        and (module == exc.name or module.startswith(exc.name + "."))
    ):
        return (
            f"module {module} not found (no {exc.name.replace('.', '/')}.py or package "
            f"{exc.name} in the bundle or the installed packages); add it to the bundle "
            "or fix the name"
        )
    if isinstance(exc, SyntaxError):
        return (
            f"module {module} does not import: syntax error in {exc.filename} line "
            f"{exc.lineno}: {exc.msg}; fix the file"
        )
    if isinstance(exc, SystemExit):
        return f"module {module} calls sys.exit({exc.code!r}) when imported{at}; remove that"
    spec_file = ""
    try:
        found = importlib.util.find_spec(module)
        spec_file = f" ({found.origin})" if found and found.origin else ""
    except BaseException:  # only used to say which file it was
        pass
    return (
        f"module {module}{spec_file} does not import: {type(exc).__name__}: {exc}{at}; "
        "fix the module or what it imports"
    )


def _check(role: str, ref: str, arg_names: list[str]) -> dict[str, Any]:
    import difflib
    import importlib
    import inspect

    from lockstep.core import entrypoints

    result: dict[str, Any] = {"role": role, "ref": ref, "ok": False, "problem": None, "file": None}
    try:
        module_name, qualname = entrypoints.split(ref)
    except ValueError as exc:
        result["problem"] = str(exc)
        return result
    try:
        obj: Any = importlib.import_module(module_name)
    except BaseException as exc:  # a bundle may raise anything, exit, or interrupt
        result["problem"] = _import_problem(module_name, exc)
        return result
    result["file"] = getattr(obj, "__file__", None)
    walked: list[str] = []
    for part in qualname.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            near = difflib.get_close_matches(part, names, n=3)
            defined = [n for n in names if callable(getattr(obj, n, None))]
            hint = (
                f"; did you mean {', '.join(near)}?"
                if near
                else f"; it defines: {', '.join(defined)}"
                if defined
                else ""
            )
            here = (
                f"{module_name}:{'.'.join(walked)}"
                if walked
                else f"module {module_name} ({result['file'] or 'built in'})"
            )
            result["problem"] = f"{here} has no {part}{hint}"
            return result
        obj = getattr(obj, part)
        walked.append(part)
    if not callable(obj):
        result["problem"] = f"{ref} is a {type(obj).__name__}, not a function"
        return result
    if inspect.isclass(obj):  # calling it would build an object, not return a result
        result["problem"] = (
            f"{ref} is a class, not a function; name a function that returns the "
            f"{'mapping' if role == 'model' else 'result'} (e.g. a module-level def)"
        )
        return result
    if inspect.iscoroutinefunction(obj) or inspect.isasyncgenfunction(obj):
        result["problem"] = f"{ref} is async; lockstep calls it as a plain function"
        return result
    call = f"{qualname}({', '.join(arg_names)})"
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # a builtin without a signature: cannot check, allow it
        result["ok"] = True
        return result
    try:
        signature.bind(*arg_names)
    except TypeError as exc:
        result["problem"] = (
            f"{qualname}{signature} cannot be called as {call} ({exc}), "
            f"as lockstep calls every {role}; change its parameters"
        )
        return result
    result["ok"] = True
    return result


def main(argv: list[str]) -> int:
    import io
    import os

    answer_path = argv[0]
    request = json.loads(sys.stdin.read())
    for path in reversed(request["paths"]):
        sys.path.insert(0, path)
    # A bundle's prints must not end up anywhere but our stderr.
    sys.stdout = io.StringIO()
    results: list[dict[str, Any]] = []
    for c in request["checks"]:  # each answer is written as it is known: a later hang keeps it
        results.append(_check(c["role"], c["ref"], list(c["args"])))
        with open(answer_path + ".tmp", "w", encoding="utf-8") as out:
            json.dump({"results": results}, out)
        os.replace(answer_path + ".tmp", answer_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

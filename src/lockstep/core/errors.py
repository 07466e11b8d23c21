"""Errors that carry their exit code (docs/design.md §4.3) and a one-line message.

Library code raises these where a problem is found; only the CLI prints them.
"""

from __future__ import annotations


class LockstepError(Exception):
    """Base of every error the CLI turns into one line and an exit code."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CheckFailed(LockstepError):
    """A check failed: mismatch, preflight, verify (exit 1)."""

    exit_code = 1


class BadInput(LockstepError):
    """Bad arguments, files or config (exit 2)."""

    exit_code = 2


class ServiceFailed(LockstepError):
    """An outside service failed: registry, mirror, engine (exit 3)."""

    exit_code = 3

"""The Kubernetes probe's wire protocol and the command a pod runs for it.

A probe connects to the Unix socket named by ``LOCKSTEP_HEALTH_SOCKET``, writes
``live`` or ``ready`` and a newline, and reads one line: ``ok`` or ``no <why>``.
``probe_command`` is the ``exec`` argv the deployment files carry (rendered by
``release.render``); ``runtime.health`` is the side that answers. The client is a
bare interpreter (``-I -S``: no site, no user paths) importing only the built-in
``_socket``, so a probe costs an interpreter's start and one round trip
(docs/design.md §4.10). Standard library only.
"""

from __future__ import annotations

import json

from lockstep.core.settings import HEALTH_SOCKET

PYTHON = "/usr/bin/python3.11"  # the images' interpreter
TIMEOUT = 5.0  # seconds a probe waits for its answer
QUESTIONS = ("live", "ready")
CLIENT = (
    "import _socket,os,sys\n"
    "c=_socket.socket(_socket.AF_UNIX,_socket.SOCK_STREAM)\n"
    f"c.settimeout({TIMEOUT})\n"
    f"c.connect(os.environ[{HEALTH_SOCKET!r}])\n"
    "c.sendall(sys.argv[1].encode()+b'\\n')\n"
    "a=c.recv(512)\n"
    "sys.stdout.write(a.decode('utf-8','replace'))\n"
    "sys.exit(a[:3]!=b'ok\\n')\n"
)


def probe_command(question: str) -> list[str]:
    """The argv Kubernetes runs for ``question`` (``live`` or ``ready``)."""
    if question not in QUESTIONS:
        raise ValueError(f"probe question {question!r} is not one of {QUESTIONS}")
    return [PYTHON, "-I", "-S", "-c", CLIENT, question]


def probe_json(question: str) -> str:
    """``probe_command(question)`` as a JSON list, for a deployment template."""
    return json.dumps(probe_command(question))

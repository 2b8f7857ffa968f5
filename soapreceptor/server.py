"""How the receptor runs under gunicorn: the one command ``soapreceptor serve`` and the test kit use.

Kept apart from ``gunicorn_config``, which sets up the server's process
environment when it is imported and so must only ever be imported by gunicorn.
"""

from __future__ import annotations

import sys
from pathlib import Path


def serve_command() -> list[str]:
    """gunicorn with soapreceptor's settings, serving ``soapreceptor.wsgi:application``."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:soapreceptor.gunicorn_config",
        "soapreceptor.wsgi:application",
    ]


def reexec_args(args: list[str]) -> list[str]:
    """The command line a binary upgrade (USR2) starts the new master with, given the one gunicorn recorded.

    gunicorn records ``[sys.executable, *sys.argv]``. Started as ``python -m
    gunicorn`` (as ``soapreceptor serve`` starts it), ``sys.argv[0]`` is the
    path of ``gunicorn/__main__.py``: run as a script, that puts gunicorn's
    package directory first on the new master's import path, where its
    ``http`` package hides the standard library's, and the new master dies
    at start (gunicorn issue 3281). Run it as ``-m gunicorn`` again.
    """
    if len(args) > 1 and Path(args[1]).parts[-2:] == ("gunicorn", "__main__.py"):
        return [args[0], "-m", "gunicorn", *args[2:]]
    return args

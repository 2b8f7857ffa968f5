"""How the receptor runs under gunicorn: the one command ``soapreceptor serve`` and the test kit use.

Kept apart from ``gunicorn_config``, which sets up the server's process
environment when it is imported and so must only ever be imported by gunicorn.
"""

from __future__ import annotations

import sys


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

"""A real, non-editable install works away from the checkout: the contract files are package data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests import support

VERSIONS = ["2006-05-05", "2006-08-23", "2006-10-31"]

# Run by the installed package's interpreter, away from the checkout; prints what it found as JSON.
PROBE = """
import json, sys
import soapreceptor
from soapreceptor import versions
from soapreceptor.contract import wsdl_path
from soapreceptor.sender import Sender
from soapreceptor.settings import Settings
from soapreceptor.signature import Keyring
from soapreceptor.wsgi import create_app

senders = [repr(Sender("http://127.0.0.1:9/", "k", version=v)) for v in versions.VERSIONS]
app = create_app(Settings(keyring=Keyring(["k"])))
json.dump(
    {
        "package": soapreceptor.__file__,
        "wsdl": {v: str(wsdl_path(v)) for v in versions.VERSIONS},
        "senders": senders,
        "app": type(app).__name__,
        "app_wsdls": sorted(app.wsdls),
    },
    sys.stdout,
)
"""

# What is not part of the project: a build from a copy without these is a build from the sources alone.
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".venv-*",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
)


def test_installed_package_finds_its_wsdl_files_and_builds_sender_and_app(tmp_path: Path) -> None:
    """``pip install --target`` (not editable), imported from elsewhere: every version's WSDL is inside the install.

    pip builds from a copy of the checkout, so the test never writes build
    output into the working tree that other tests and people are using.
    """
    source = tmp_path / "source"
    shutil.copytree(support.REPO, source, ignore=NOT_SOURCES)
    target = tmp_path / "installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOAPRECEPTOR_", "PYTHON"))}

    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(source)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=support.DEADLINE,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)

    installed = target.resolve()
    assert Path(found["package"]).resolve().is_relative_to(installed)
    assert sorted(found["wsdl"]) == VERSIONS
    for version, path in found["wsdl"].items():
        assert Path(path).is_relative_to(installed / "soapreceptor" / "wsdl" / version), path
        assert Path(path).is_file()
    assert found["senders"] == [f"<Sender http://127.0.0.1:9/ version={v}>" for v in VERSIONS]
    assert found["app"] == "ReceptorApp"
    assert found["app_wsdls"] == VERSIONS
    assert (target / "bin" / "soapreceptor").is_file()

"""spyne 2.14 imports cleanly because of soapreceptor.spyne_compat, and only because of it."""

from __future__ import annotations

import subprocess
import sys

import soapreceptor  # noqa: F401 (importing the package applies the fix)
from soapreceptor import spyne_compat
from tests.support import REPO


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error::ImportWarning", "-W", "error::DeprecationWarning:soapreceptor", "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_the_bundled_six_is_replaced_in_this_process() -> None:
    import spyne.util  # noqa: PLC0415 (imported here, after soapreceptor, on purpose)

    assert sys.modules["spyne.util.six"] is spyne_compat.ALIASES["spyne.util.six"]
    assert spyne.util.six.get_function_name(run) == "run"


def test_every_entry_point_imports_without_import_warnings() -> None:
    for module in ("soapreceptor", "soapreceptor.wsgi", "soapreceptor.cli", "soapreceptor.service"):
        result = run(f"import {module}; import spyne.server.wsgi")
        assert result.returncode == 0, result.stderr


def test_without_the_fix_spyne_does_not_import_cleanly() -> None:
    # This is what the module works around: if it stops being needed (a new
    # spyne release), this test says so and the module can go.
    result = run("import spyne.server.wsgi")
    assert result.returncode != 0
    expected = "ImportWarning" if sys.version_info < (3, 12) else "spyne.util.six.moves"
    assert expected in result.stderr


def test_apply_is_idempotent() -> None:
    assert spyne_compat.apply()
    assert spyne_compat.apply()

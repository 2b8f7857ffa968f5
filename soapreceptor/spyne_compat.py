"""Make spyne 2.14, its last release, import cleanly on Python 3.11 to 3.13.

spyne bundles an old copy of ``six`` as ``spyne.util.six``. Its import hook has
no ``find_spec``: Python 3.11 falls back to ``find_module`` with an
ImportWarning, and Python 3.12 removed that fallback, so ``spyne.util.six.moves``
cannot be imported at all. Python 3.13 also removed ``cgi``, which spyne
imports for ``cgi.parse_header``. The fixes were merged upstream, never released.

:func:`apply` puts the maintained ``six`` from PyPI in place of the bundled
copy, and maps the handful of ``six.moves`` names spyne imports straight to the
standard library modules they stand for on Python 3. ``cgi`` comes from the
``legacy-cgi`` distribution on 3.13+ (a dependency with an environment marker
in ``setup.py``). It must run before spyne is first imported: the package's
``__init__`` calls it, and every entry point (WSGI app, CLI, tests) imports
the package first.
"""

from __future__ import annotations

import collections.abc
import http.cookies
import operator
import sys
import urllib.error
import urllib.parse
import urllib.request
from types import ModuleType

import six

_BUNDLED = "spyne.util.six"


def _bundled_six() -> ModuleType:
    """PyPI's six, plus the one name spyne's copy added (``get_function_name``)."""
    module = ModuleType(_BUNDLED, six.__doc__)
    module.__dict__.update({k: v for k, v in vars(six).items() if not k.startswith("__")})
    module.get_function_name = operator.attrgetter("__name__")  # type: ignore[attr-defined]
    return module


#: The modules spyne imports through its bundled six, and what they are on Python 3.
ALIASES: dict[str, ModuleType] = {
    _BUNDLED: _bundled_six(),
    f"{_BUNDLED}.moves": six.moves,
    f"{_BUNDLED}.moves.collections_abc": collections.abc,
    f"{_BUNDLED}.moves.http_cookies": http.cookies,
    f"{_BUNDLED}.moves.urllib": urllib,
    f"{_BUNDLED}.moves.urllib.parse": urllib.parse,
    f"{_BUNDLED}.moves.urllib.request": urllib.request,
    f"{_BUNDLED}.moves.urllib.error": urllib.error,
}


def apply() -> bool:
    """Install the aliases unless spyne is already imported; True if they are in place."""
    if "spyne" in sys.modules and _BUNDLED not in sys.modules:
        # spyne was imported before us and took its bundled copy: too late to
        # swap it, and (since the import worked) nothing to repair.
        return False
    for name, module in ALIASES.items():
        sys.modules.setdefault(name, module)
    return sys.modules[_BUNDLED] is ALIASES[_BUNDLED]

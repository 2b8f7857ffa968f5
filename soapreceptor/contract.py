"""The contract files in ``wsdl/``: where they are, and copies with a receptor's own address.

In a checkout they are the top-level ``wsdl/`` folder; installed, the same
files are the ``soapreceptor.wsdl`` package data (see ``setup.py``).
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from . import versions

FILENAME = "AWSMechanicalTurkRequesterNotification.wsdl"
_SOAP_ADDRESS = "{http://schemas.xmlsoap.org/wsdl/soap/}address"
_PACKAGE = Path(__file__).resolve().parent
# Installed: the package data folder. In a checkout (and an editable install): the top-level wsdl/.
_FOLDERS = (_PACKAGE / "wsdl", _PACKAGE.parent / "wsdl")


def wsdl_path(version: str = versions.DEFAULT_VERSION) -> Path:
    """The path of ``version``'s WSDL file; ValueError for a version with none."""
    if not versions.is_known(version):
        raise ValueError(f"no WSDL for notification version {version!r}; known: {', '.join(versions.VERSIONS)}")
    for folder in _FOLDERS:
        path = folder / version / FILENAME
        if path.is_file():
            return path
    raise FileNotFoundError(f"the WSDL file for {version} is missing from the installation (looked in {_FOLDERS})")


def wsdl_with_address(version: str, address: str) -> bytes:
    """``version``'s WSDL file with ``soap:address`` set to ``address`` (comments and layout kept)."""
    tree = etree.parse(str(wsdl_path(version)), etree.XMLParser(resolve_entities=False, no_network=True))
    for element in tree.iter(_SOAP_ADDRESS):
        element.set("location", address)
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")

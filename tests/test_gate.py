"""The gate's check for a document type declaration, before anything knows the body's encoding."""

from __future__ import annotations

import pytest

from soapreceptor import gate
from tests.support import amazon_envelope


@pytest.mark.parametrize("codec", ["ascii", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_doctype_is_refused_in_any_encoding_anywhere(codec: str, where: str) -> None:
    body = amazon_envelope().decode()
    marker = "<!DOCTYPE e>"
    text = {"start": marker + body, "middle": body.replace("<Version>", marker + "<Version>"), "end": body + marker}
    with pytest.raises(gate.DTDNotAllowed, match="DOCTYPE"):
        gate.check_body(text[where].encode(codec))


@pytest.mark.parametrize(
    "body",
    [
        amazon_envelope(),
        # An exclamation mark that starts no DOCTYPE: a comment, CDATA, text.
        amazon_envelope().replace(b"<Version>", b"<!-- ! --><Version>"),
        b"<![CDATA[!]]><!doctype is lower case, not a declaration>!",
        b"",
    ],
)
def test_no_doctype_passes(body: bytes) -> None:
    gate.check_body(body)

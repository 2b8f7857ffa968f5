"""The files in wsdl/ are the contract: zeep reads them, the service's own ?wsdl says the same,
and every message valid against them is accepted."""

from __future__ import annotations

import datetime as dt
import itertools
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
import zeep
from lxml import etree

from soapreceptor import Keyring, Settings, versions
from soapreceptor.contract import wsdl_path, wsdl_with_address
from soapreceptor.sender import EventSpec, Sender
from soapreceptor.wsgi import create_app
from tests.support import KEY_2, REPO, Harness, amazon_envelope

XSD = "http://www.w3.org/2001/XMLSchema"
SIGNED_AT = dt.datetime(2006, 5, 23, 23, 22, 30, tzinfo=dt.UTC)
OPTIONAL_EVENT_FIELDS = {
    "EventTime": "2006-04-21T18:55:23Z",
    "HITTypeId": "KDSFO4455LKDAF3",
    "HITId": "KDSFO4455LKDAF4",
    "AssignmentId": "KDSFO4455LKDAF3KDSFO4455LKDAF3",
}


def test_one_folder_per_version_in_the_checkout() -> None:
    folders = sorted(p.name for p in (REPO / "wsdl").iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert folders == sorted(versions.VERSIONS)
    for version in versions.VERSIONS:
        assert wsdl_path(version) == REPO / "wsdl" / version / "AWSMechanicalTurkRequesterNotification.wsdl"


def describe(client: zeep.Client) -> dict[str, Any]:
    """What a WSDL says about the messages, independent of how it is written down."""
    described: dict[str, Any] = {}
    for service in client.wsdl.services.values():
        for port in service.ports.values():
            binding = port.binding
            for name, operation in binding._operations.items():
                described[name] = {
                    "service": service.name,
                    "binding": type(binding).__name__,
                    "soapaction": operation.soapaction,
                    "style": operation.style,
                    "input": shape(operation.input.body),
                    "output": shape(operation.output.body),
                    "address": port.binding_options["address"],
                }
    return described


def shape(element: Any) -> Any:
    """An element's name, cardinality and type, recursively."""
    kind = element.type
    children = getattr(kind, "elements", None)
    return (
        element.qname.text if element.qname is not None else element.name,
        element.min_occurs,
        element.max_occurs,
        kind.qname.text if children is None else tuple(shape(child) for _name, child in children),
    )


@pytest.mark.parametrize("version", versions.VERSIONS)
def test_served_wsdl_and_file_describe_the_same_messages(version: str, tmp_path: Path) -> None:
    address = "https://receptor.example.org/mturk"
    app = create_app(Settings(keyring=Keyring([KEY_2]), public_url=address))
    served = tmp_path / "served.wsdl"
    served.write_bytes(app.wsdls[version])
    from_file = tmp_path / "file.wsdl"
    from_file.write_bytes(wsdl_with_address(version, address))

    served_description = describe(zeep.Client(str(served)))
    file_description = describe(zeep.Client(str(from_file)))
    assert served_description == file_description
    notify = file_description["Notify"]
    assert notify["soapaction"] == "http://soap.amazon.com"
    assert notify["binding"] == "Soap11Binding"
    assert notify["style"] == "document"
    assert notify["address"] == address
    assert notify["input"][0] == f"{{{versions.namespace(version)}}}Notify"
    assert notify["output"] == (f"{{{versions.namespace(version)}}}NotifyResponse", 1, 1, ())


@pytest.mark.parametrize("version", versions.VERSIONS)
def test_file_says_what_protocol_md_says(version: str) -> None:
    client = zeep.Client(str(wsdl_path(version)))
    notify = describe(client)["Notify"]["input"]
    ns = f"{{{versions.namespace(version)}}}"
    assert notify == (
        f"{ns}Notify",
        1,
        1,
        (
            (f"{ns}Signature", 0, 1, f"{{{XSD}}}string"),
            (f"{ns}Timestamp", 1, 1, f"{{{XSD}}}dateTime"),
            (f"{ns}Version", 1, 1, f"{{{XSD}}}string"),
            (
                f"{ns}Event",
                1,
                "unbounded",
                (
                    (f"{ns}EventType", 1, 1, f"{{{XSD}}}string"),
                    (f"{ns}EventTime", 0, 1, f"{{{XSD}}}dateTime"),
                    (f"{ns}HITTypeId", 0, 1, f"{{{XSD}}}string"),
                    (f"{ns}HITId", 0, 1, f"{{{XSD}}}string"),
                    (f"{ns}AssignmentId", 0, 1, f"{{{XSD}}}string"),
                ),
            ),
        ),
    )


@pytest.mark.parametrize("version", versions.VERSIONS)
def test_served_wsdl_declares_soap_1_1_only(version: str) -> None:
    served = create_app(Settings(keyring=Keyring([KEY_2]))).wsdls[version]
    assert b"soap12" not in served
    assert b"http://www.w3.org/2003/05/soap-envelope" not in served
    assert b"http://schemas.xmlsoap.org/wsdl/soap12/" not in wsdl_path(version).read_bytes()


def schema_for(version: str) -> etree.XMLSchema:
    document = etree.parse(str(wsdl_path(version)))
    schema = document.find(f".//{{{XSD}}}schema")
    assert schema is not None
    # A standalone copy that keeps the WSDL's namespace declarations (tns: in type="...").
    nsmap: Any = document.getroot().nsmap
    standalone = etree.Element(schema.tag, nsmap=nsmap)
    for key, value in schema.attrib.items():
        standalone.set(key, value)
    standalone.extend(deepcopy(list(schema)))
    return etree.XMLSchema(standalone)


def notify_element(envelope: bytes) -> etree._Element:
    body = etree.fromstring(envelope).find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
    assert body is not None
    return body[0]


def message_variants(version: str) -> list[bytes]:
    """Messages that exercise every optional part of the contract, signed and unsigned."""
    variants = []
    names = list(OPTIONAL_EVENT_FIELDS)
    for size in range(len(names) + 1):
        for subset in itertools.combinations(names, size):
            event = {"EventType": "SomeEventType", **{name: OPTIONAL_EVENT_FIELDS[name] for name in subset}}
            for signature in ("SCKBAzx2/Kt3aYqRcDjBAqOSm+o=", None):
                variants.append(amazon_envelope(version, signature=signature, events=[event]))
    variants.append(amazon_envelope(version, events=[{"EventType": "Ping"}] * 3))
    return variants


@pytest.mark.parametrize("version", versions.VERSIONS)
def test_every_message_valid_against_the_file_is_accepted(version: str) -> None:
    schema = schema_for(version)
    app = create_app(
        Settings(keyring=Keyring([KEY_2]), accept_unsigned=True),
        clock=lambda: SIGNED_AT,
    )
    for body in message_variants(version):
        schema.assertValid(notify_element(body))
        reply = Harness(app).notify(body)
        assert reply.code == 200, reply.body


@pytest.mark.parametrize("version", versions.VERSIONS)
def test_amazon_shape_and_zeep_built_messages_are_valid_and_accepted_alike(version: str) -> None:
    schema = schema_for(version)
    app = create_app(Settings(keyring=Keyring([KEY_2])), clock=lambda: SIGNED_AT)
    sender = Sender("http://127.0.0.1:9/", KEY_2, version=version)
    built = sender.envelope(
        [
            EventSpec(
                "AssignmentAccepted",
                "KDSFO4455LKDAF3",
                "KDSFO4455LKDAF3",
                "KDSFO4455LKDAF3KDSFO4455LKDAF3",
                dt.datetime(2006, 4, 21, 18, 55, 23, tzinfo=dt.UTC),
            )
        ],
        timestamp="2006-05-23T23:22:30Z",
    )
    amazon = amazon_envelope(version)
    for body in (amazon, built):
        schema.assertValid(notify_element(body))
        assert Harness(app).notify(body).code == 200
    first, second = app.receptor.journal.events()
    assert (first.state, second.state) == ("pending", "duplicate")  # the same event, read alike
    assert first.event == second.event

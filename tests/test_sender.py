"""The sender's options: where the version travels, and each deliberate fault, against a real receptor."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from lxml import etree

from soapreceptor import versions
from soapreceptor.sender import VERSION_PLACES, EventSpec, Sender
from tests.support import KEY_2, Server


@pytest.fixture
def receptor(server_factory: Callable[..., Server]) -> Server:
    """A receptor with the default 300 s window, so fresh and stale timestamps are told apart for real."""
    return server_factory({})


@pytest.mark.parametrize("version_in", VERSION_PLACES)
@pytest.mark.parametrize("version", versions.VERSIONS)
def test_every_place_for_the_version_is_accepted(receptor: Server, version: str, version_in: str) -> None:
    sender = Sender(receptor.url, KEY_2, version=version, version_in=version_in)
    result = sender.send([EventSpec("AssignmentAccepted", "T", "H", f"A-{version}-{version_in}")])
    assert result.accepted, result
    (event,) = receptor.wait_for_events(1)
    assert (event["assignment_id"], event["version"]) == (f"A-{version}-{version_in}", version)


def test_where_the_version_travels_on_the_wire() -> None:
    url = "http://127.0.0.1:9/"
    plain = Sender(url, KEY_2, version="2006-10-31")
    assert plain.headers()["SOAPAction"] == '"http://soap.amazon.com"'
    assert b"Header" not in plain.envelope([EventSpec("Ping")])
    action = Sender(url, KEY_2, version="2006-10-31", version_in="soapaction")
    assert action.headers()["SOAPAction"] == f'"{versions.wsdl_url("2006-10-31")}"'
    header = Sender(url, KEY_2, version="2006-10-31", version_in="header")
    envelope = etree.fromstring(header.envelope([EventSpec("Ping")]))
    (block,) = envelope.findall("{http://schemas.xmlsoap.org/soap/envelope/}Header/*")
    assert block.text == versions.wsdl_url("2006-10-31")
    with pytest.raises(ValueError, match="version_in"):
        Sender(url, KEY_2, version_in="body")


def send_cli(url: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOAPRECEPTOR_SECRET": KEY_2}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "soapreceptor.cli",
            "send",
            "--url",
            url,
            "--event",
            "AssignmentAccepted:T:H:A",
            *options,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("options", "faultcode"),
    [
        (["--wrong-key"], "Client.SignatureMismatch"),
        (["--unsigned"], "Client.UnsignedMessage"),
        (["--deprecated"], "Client.UnsignedMessage"),
        (["--stale"], "Client.StaleTimestamp"),
        (["--stale", "301"], "Client.StaleTimestamp"),
    ],
)
def test_deliberate_faults_are_refused_as_such(receptor: Server, options: list[str], faultcode: str) -> None:
    result = send_cli(receptor.url, *options)
    assert result.returncode == 1, result.stderr
    assert faultcode in result.stdout


def test_a_slightly_old_timestamp_is_still_fresh(receptor: Server) -> None:
    result = send_cli(receptor.url, "--stale", "60")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_prints_and_sends_nothing() -> None:
    result = send_cli("http://127.0.0.1:9/", "--dry-run", "--version", "2006-08-23", "--version-in", "soapaction")
    assert result.returncode == 0, result.stderr
    headers, _, envelope = result.stdout.partition("\n\n")
    assert f'SOAPAction: "{versions.wsdl_url("2006-08-23")}"' in headers
    assert etree.fromstring(envelope.strip().encode()).find(".//{*}Notify") is not None

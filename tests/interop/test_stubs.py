"""The WSDL files work with the tools people generate client stubs with.

For each tool: generate a client (or stubs) from ``wsdl/<version>/...wsdl``,
make a signed ``Notify`` call with it to a real gunicorn receptor, and check
that the hook got the event. Each tool's diagnostics are captured and must be
free of warnings (the few accepted lines are listed and explained below).

A tool that is not installed is skipped, naming ``tests/interop/install.sh``;
with ``SOAPRECEPTOR_INTEROP_REQUIRED=1`` (set it in CI, after running that
script) a missing tool fails instead.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import zeep
import zeep.plugins
from lxml import etree
from suds.client import Client as SudsClient  # type: ignore[import-untyped]
from suds.plugin import MessagePlugin  # type: ignore[import-untyped]

from soapreceptor.signature import sign
from tests.support import KEY_2, REPO, Server

VERSIONS = ["2006-05-05", "2006-08-23", "2006-10-31"]
CLIENTS = Path(__file__).resolve().parent / "clients"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "soapreceptor-interop"
SERVICE_NS = "http://requester.mturk.amazonaws.com/doc/{version}"
# Compilers and npm get minutes, not seconds.
BUILD_TIMEOUT = 600.0
RUN_TIMEOUT = 120.0
# The npm package node-soap, pinned to the series this suite was written against.
NODE_SOAP = "soap@1"


def wsdl_file(version: str) -> Path:
    return REPO / "wsdl" / version / "AWSMechanicalTurkRequesterNotification.wsdl"


def require(tool: str, how: str) -> str:
    """The path of ``tool``; skip (or fail, in CI) when it is not installed."""
    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} is not installed ({how}; tests/interop/install.sh installs it)"
        if os.environ.get("SOAPRECEPTOR_INTEROP_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def run(command: list[str], *, cwd: Path | None = None, timeout: float = RUN_TIMEOUT, **kw: Any) -> tuple[str, str]:
    """Run ``command``; fail with its output unless it exits 0. Returns (stdout, stderr)."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout, done.stderr


def warning_lines(text: str, accepted: tuple[str, ...] = ()) -> list[str]:
    """The lines of ``text`` that look like a warning or an error, minus the accepted ones."""
    found = [line for line in text.splitlines() if re.search(r"warn|error|deprecat|\[WARNING\]", line, re.IGNORECASE)]
    return [line for line in found if not any(ok in line for ok in accepted)]


def fresh_signed_timestamp() -> tuple[str, str]:
    """A timestamp for now, in the text MTurk sends, and its signature under the receptor's key."""
    timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return timestamp, sign(KEY_2, timestamp)


def expect_event(server: Server, version: str, assignment_id: str) -> None:
    (event,) = server.wait_for_events(1)
    assert event["event_type"] == "AssignmentSubmitted"
    assert event["hit_type_id"] == "HITTYPE1"
    assert event["hit_id"] == "HIT1"
    assert event["assignment_id"] == assignment_id
    assert event["version"] == version
    assert event["event_time"] is not None


def sent_timestamp(envelope: bytes, version: str) -> str | None:
    """The Timestamp element's text in an envelope a client sent."""
    found = etree.fromstring(envelope).find(f".//{{{SERVICE_NS.format(version=version)}}}Timestamp")
    return None if found is None else found.text


@pytest.fixture
def receptor(server_factory: Callable[..., Server]) -> Server:
    """A receptor with the default 300 s timestamp window: clients send fresh, correctly signed timestamps."""
    return server_factory({})


# -- 1. zeep ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_zeep(receptor: Server, version: str, caplog: pytest.LogCaptureFixture) -> None:
    wsdl = wsdl_file(version)
    out, err = run([sys.executable, "-W", "error", "-m", "zeep", str(wsdl)])
    assert err == "", err
    assert "Notify(Signature: xsd:string, Timestamp: xsd:dateTime, Version: xsd:string, Event: ns0:Event[]" in out
    assert "Binding: {" + SERVICE_NS.format(version=version) + "}AWSMechanicalTurkRequesterNotificationBinding" in out

    history = zeep.plugins.HistoryPlugin()
    timestamp, signature = fresh_signed_timestamp()
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")
        client = zeep.Client(str(wsdl), plugins=[history])
        service = client.create_service(
            f"{{{SERVICE_NS.format(version=version)}}}AWSMechanicalTurkRequesterNotificationBinding", receptor.url
        )
        # A str for xsd:dateTime is sent as given (zeep's DateTime.xmlvalue passes strings through).
        service.Notify(
            Signature=signature,
            Timestamp=timestamp,
            Version=version,
            Event=[
                {
                    "EventType": "AssignmentSubmitted",
                    "EventTime": timestamp,
                    "HITTypeId": "HITTYPE1",
                    "HITId": "HIT1",
                    "AssignmentId": f"zeep-{version}",
                }
            ],
        )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert sent_timestamp(etree.tostring(history.last_sent["envelope"]), version) == timestamp
    expect_event(receptor, version, f"zeep-{version}")


# -- 2. suds-community ----------------------------------------------------------------------------------


class LastSent(MessagePlugin):
    """Keeps the envelope suds sends, to check the Timestamp text on the wire."""

    def __init__(self) -> None:
        self.envelope = b""

    def sending(self, context: Any) -> None:
        self.envelope = bytes(context.envelope)


@pytest.mark.parametrize("version", VERSIONS)
def test_suds(receptor: Server, version: str, caplog: pytest.LogCaptureFixture) -> None:
    wsdl = wsdl_file(version)
    last = LastSent()
    timestamp, signature = fresh_signed_timestamp()
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")
        # cache=None: no WSDL cache under /tmp/suds shared between runs.
        client = SudsClient(wsdl.as_uri(), location=receptor.url, cache=None, plugins=[last])
        assert "Notify(xs:string Signature, xs:dateTime Timestamp, xs:string Version, Event[] Event)" in str(client)
        event = client.factory.create("{" + SERVICE_NS.format(version=version) + "}Event")
        event.EventType = "AssignmentSubmitted"
        # suds sends a str for xs:dateTime as it is (it converts only datetime objects).
        event.EventTime = timestamp
        event.HITTypeId = "HITTYPE1"
        event.HITId = "HIT1"
        event.AssignmentId = f"suds-{version}"
        client.service.Notify(Signature=signature, Timestamp=timestamp, Version=version, Event=[event])
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert sent_timestamp(last.envelope, version) == timestamp
    expect_event(receptor, version, f"suds-{version}")


# -- 3. node-soap -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """node-soap installed with npm, cached under ~/.cache/soapreceptor-interop (a cold install works too)."""
    require("node", "Debian package nodejs")
    npm = require("npm", "Debian package npm")
    home = CACHE / "npm"
    if not (home / "node_modules" / "soap" / "package.json").exists():
        staging = CACHE / f"npm.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            run(
                [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", NODE_SOAP],
                cwd=staging,
                timeout=BUILD_TIMEOUT,
            )
            shutil.rmtree(home, ignore_errors=True)
            staging.rename(home)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return home / "node_modules"


@pytest.mark.parametrize("version", VERSIONS)
def test_node_soap(receptor: Server, version: str, node_modules: Path) -> None:
    timestamp, signature = fresh_signed_timestamp()
    assignment_id = f"node-{version}"
    env = {**os.environ, "NODE_PATH": str(node_modules)}
    out, err = run(
        [
            "node",
            str(CLIENTS / "node_notify.js"),
            str(wsdl_file(version)),
            receptor.url,
            signature,
            timestamp,
            version,
            "AssignmentSubmitted",
            "HITTYPE1",
            "HIT1",
            assignment_id,
        ],
        env=env,
    )
    assert err == "", err
    answer = json.loads(out)
    assert sent_timestamp(answer["request"].encode(), version) == timestamp
    expect_event(receptor, version, assignment_id)


# -- 4. gSOAP -----------------------------------------------------------------------------------------

# gSOAP maps xsd:dateTime to time_t, which would re-serialise the Timestamp
# (and lose what was signed); this typemap line makes it a char* sent verbatim.
GSOAP_TYPEMAP = "xsd__dateTime = | char* | char*\n"
GSOAP_IMPORT = Path("/usr/share/gsoap/import")
GSOAP_PROXY = "soapAWSMechanicalTurkRequesterNotificationBindingProxy"


def build_gsoap_client(version: str, workdir: Path) -> Path:
    """wsdl2h + soapcpp2 (client side, C++ proxy class) + g++: the client binary."""
    wsdl2h = require("wsdl2h", "Debian package gsoap")
    soapcpp2 = require("soapcpp2", "Debian package gsoap")
    gxx = require("g++", "Debian package g++")
    if not Path("/usr/include/stdsoap2.h").exists():
        require("stdsoap2.h (libgsoap-dev)", "Debian package libgsoap-dev")
    workdir.mkdir(parents=True)
    (workdir / "typemap.dat").write_text(GSOAP_TYPEMAP)
    _, err = run([wsdl2h, "-t", "typemap.dat", "-o", "notify.h", str(wsdl_file(version))], cwd=workdir)
    # wsdl2h reports "Warning: ..." for schema problems; its banner and advice are not warnings.
    assert warning_lines(err) == [], err
    header = (workdir / "notify.h").read_text()
    assert re.search(r"char\*\s+Timestamp\s+1;", header), "the typemap did not map Timestamp to char*"
    # -C client side only, -j C++ proxy classes, -x no sample XML messages, -L no soapClientLib.cpp.
    _, err = run([soapcpp2, "-C", "-j", "-x", "-L", f"-I{GSOAP_IMPORT}", "notify.h"], cwd=workdir)
    assert warning_lines(err) == [], err
    assert "Compilation successful" in err, err
    nsmap = (workdir / "AWSMechanicalTurkRequesterNotificationBinding.nsmap").read_text()
    # The WSDL declares SOAP 1.1 only: the envelope namespace must be 1.1's.
    assert '"SOAP-ENV", "http://schemas.xmlsoap.org/soap/envelope/"' in nsmap, nsmap
    binary = workdir / "gsoap_notify"
    _, err = run(
        [
            gxx,
            "-Wall",
            "-I.",
            "-o",
            str(binary),
            str(CLIENTS / "gsoap_notify.cpp"),
            "soapC.cpp",
            f"{GSOAP_PROXY}.cpp",
            "-lgsoap++",
        ],
        cwd=workdir,
        timeout=BUILD_TIMEOUT,
    )
    assert warning_lines(err) == [], err
    return binary


@pytest.mark.parametrize("version", VERSIONS)
def test_gsoap(receptor: Server, version: str, tmp_path: Path) -> None:
    binary = build_gsoap_client(version, tmp_path / "gsoap")
    timestamp, signature = fresh_signed_timestamp()
    assignment_id = f"gsoap-{version}"
    out, err = run(
        [
            str(binary),
            receptor.url,
            signature,
            timestamp,
            version,
            "AssignmentSubmitted",
            "HITTYPE1",
            "HIT1",
            assignment_id,
        ]
    )
    assert out.strip() == "Notify OK", (out, err)
    assert err == "", err
    expect_event(receptor, version, assignment_id)


# -- 5. JAX-WS wsimport -------------------------------------------------------------------------------


# Debian's JAX-WS RI: jaxws-rt.jar's manifest Class-Path brings the rest (JAXB, SAAJ, ...).
JAXWS_RT = Path("/usr/share/jaxws/lib/jaxws-rt.jar")
# Without it, Debian's SAAJ API jar logs "WARNING: Using deprecated META-INF/services
# mechanism with non-standard property: javax.xml.soap.MetaFactory" on every call: a
# packaging matter of the SAAJ jars, nothing to do with the WSDL. Naming the factory
# keeps stderr clean, so the test can require it empty.
SAAJ_FACTORY = "-Djavax.xml.soap.SAAJMetaFactory=com.sun.xml.messaging.saaj.soap.SAAJMetaFactoryImpl"


@pytest.mark.parametrize("version", VERSIONS)
def test_wsimport(receptor: Server, version: str, tmp_path: Path) -> None:
    wsimport = require("wsimport", "Debian package jaxws")
    javac = require("javac", "a JDK, e.g. Debian package default-jdk-headless")
    java = require("java", "a JDK, e.g. Debian package default-jdk-headless")
    if not JAXWS_RT.exists():
        require(str(JAXWS_RT), "Debian package jaxws")
    out_dir = tmp_path / "wsimport"
    out_dir.mkdir()
    # -keep keeps the .java sources next to the .class files wsimport compiles;
    # -p gives the stubs one package whatever the version, for the client below.
    out, err = run(
        [wsimport, "-keep", "-p", "mturk.notify", "-d", str(out_dir), str(wsdl_file(version))], timeout=BUILD_TIMEOUT
    )
    assert warning_lines(out + err) == [], out + err
    package = out_dir / "mturk" / "notify"
    for name in ["AWSMechanicalTurkRequesterNotificationPortType", "AWSMechanicalTurkRequesterNotification"]:
        assert (package / f"{name}.java").exists(), sorted(p.name for p in package.iterdir())
        assert (package / f"{name}.class").exists()
    for name in ["Notify", "NotifyResponse", "Event", "ObjectFactory"]:
        assert (package / f"{name}.class").exists()
    port_type = (package / "AWSMechanicalTurkRequesterNotificationPortType.java").read_text()
    assert '@WebMethod(operationName = "Notify", action = "http://soap.amazon.com")' in port_type, port_type
    assert f'targetNamespace = "{SERVICE_NS.format(version=version)}"' in port_type, port_type
    assert "XMLGregorianCalendar timestamp" in port_type, port_type

    classpath = f"{out_dir}{os.pathsep}{JAXWS_RT}"
    # -Xlint:all except "path": Debian's jar manifests name a few jars no package ships
    # (stax.jar, stax-api.jar, ha-api.jar), which javac reports as bad path elements.
    out, err = run(
        [javac, "-Xlint:all,-path", "-d", str(out_dir), "-cp", classpath, str(CLIENTS / "JaxwsNotify.java")],
        timeout=BUILD_TIMEOUT,
    )
    assert warning_lines(out + err) == [], out + err
    timestamp, signature = fresh_signed_timestamp()
    assignment_id = f"jaxws-{version}"
    out, err = run(
        [
            java,
            SAAJ_FACTORY,
            "-cp",
            classpath,
            "JaxwsNotify",
            wsdl_file(version).as_uri(),
            receptor.url,
            signature,
            timestamp,
            version,
            "AssignmentSubmitted",
            "HITTYPE1",
            "HIT1",
            assignment_id,
        ]
    )
    assert out.strip() == "Notify OK", (out, err)
    assert err == "", err
    expect_event(receptor, version, assignment_id)

"""Recorded fixtures: the committed files are the standard set, and replay gets each expected answer."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from soapreceptor import errors, fixtures, replay, wire
from tests.support import KEY_1, KEY_2, REPO, Server

FIXTURES = REPO / "tests" / "fixtures"


def test_committed_files_are_exactly_the_standard_set() -> None:
    expected = {f"{f.name}{fixtures.SUFFIX}": f.render() for f in fixtures.standard_set()}
    on_disk = {str(p.relative_to(FIXTURES)): p.read_bytes() for p in FIXTURES.rglob("*.http")}
    assert sorted(on_disk) == sorted(expected), "regenerate: python -m soapreceptor.fixtures tests/fixtures"
    for name, data in expected.items():
        assert on_disk[name] == data, f"{name} differs from what the generator writes"


def test_the_set_covers_what_it_must() -> None:
    loaded = fixtures.load([FIXTURES])
    names = {f.name.removeprefix(str(FIXTURES) + "/") for f in loaded}
    assert {"amazon-shape/2006-05-05.http", "amazon-shape/2006-08-23.http", "amazon-shape/2006-10-31.http"} <= names
    for size in (1, 2, 10, 100):
        assert f"batches/{size:03d}-events.http" in names
    assert {f.signing for f in loaded} == set(fixtures.SIGNING)
    assert any(f.stale for f in loaded)
    assert {f.key for f in loaded} == {KEY_1, KEY_2, None}
    for fixture in loaded:
        assert fixture.header("SOAPAction") is not None
        assert fixture.header("User-Agent") == "Jakarta Commons-HttpClient/2.0final"


@pytest.mark.parametrize("fixture", fixtures.standard_set(), ids=lambda f: f.name)
def test_each_fixture_round_trips_and_reads_as_it_says(fixture: fixtures.Fixture) -> None:
    parsed = fixtures.parse(fixture.render(), fixture.name)
    assert parsed.render() == fixture.render()
    assert (parsed.body, parsed.expect, parsed.key, parsed.signing) == (
        fixture.body,
        fixture.expect,
        fixture.key,
        fixture.signing,
    )
    refused_by_wire = None
    try:
        wire.parse_notify(fixture.body, fixture.header("SOAPAction"))
    except errors.NotifyFault as fault:
        refused_by_wire = fault.faultcode
    if refused_by_wire is not None:
        # Refused before any policy: the fixture must expect exactly that fault.
        assert fixture.expect == fixtures.Expectation(500, refused_by_wire)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"POST / HTTP/1.1\r\n\r\n", "not a soapreceptor fixture"),
        (b"# soapreceptor-fixture: 1\n# expect: 200\nPOST / HTTP/1.1\r\nHost: x\r\n", "no blank line"),
        (
            b"# soapreceptor-fixture: 1\n# expect: 200\nPOST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc",
            "Content-Length",
        ),
        (b"# soapreceptor-fixture: 1\n# expect: ok\nPOST / HTTP/1.1\r\n\r\n", "expectation"),
        (b"# soapreceptor-fixture: 1\n# expect: 200\n# signing: maybe\nPOST / HTTP/1.1\r\n\r\n", "signing"),
    ],
)
def test_bad_fixture_files_say_what_is_wrong(data: bytes, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        fixtures.parse(data, "bad.http")


def run(argv: list[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    replay.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = replay.command(parser.parse_args(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(f"{KEY_1}\n{KEY_2}\n")
    return path


def test_replay_as_recorded_through_gunicorn(server_factory: Callable[..., Server], keys_file: Path) -> None:
    server = server_factory(
        {"SOAPRECEPTOR_SECRET": "", "SOAPRECEPTOR_SECRET_FILE": str(keys_file), "SOAPRECEPTOR_TIMESTAMP_TOLERANCE": "0"}
    )
    code, out, _ = run(["--url", server.url, str(FIXTURES)])
    total = len(fixtures.standard_set())
    assert code == 0, out
    assert out.splitlines()[-1] == f"replayed {total}: {total} as expected, 0 not"
    assert out.count("\nok   ") + out.startswith("ok   ") == total


def test_replay_resigned_against_the_default_window(server_factory: Callable[..., Server]) -> None:
    server = server_factory({"SOAPRECEPTOR_SECRET": "a-secret-of-this-deployment"})
    code, out, _ = run(["--url", server.url, "--resign", "--secret", "a-secret-of-this-deployment", str(FIXTURES)])
    assert code == 0, out
    assert "ok   " + str(FIXTURES / "refused" / "stale.http") + ": 500 Client.StaleTimestamp" in out


def test_replay_reports_answers_that_are_not_as_expected(server_factory: Callable[..., Server]) -> None:
    server = server_factory({"SOAPRECEPTOR_TIMESTAMP_TOLERANCE": "0"})  # KEY_2 only
    code, out, _ = run(["--url", server.url, str(FIXTURES / "event-types")])
    assert code == 1
    assert "FAIL " in out
    assert "got 500 Client.SignatureMismatch, expected 200" in out  # the fixtures signed with KEY_1


@pytest.mark.parametrize("url", ["example.org/mturk", "http://:8080/", "http://127.0.0.1:99999/", "ftp://127.0.0.1/"])
def test_replay_sends_nothing_to_a_url_without_an_http_host_and_port(url: str) -> None:
    """Before, a URL without a host was posted to 127.0.0.1 (and any scheme but https as http)."""
    fixture = fixtures.standard_set()[0]
    with pytest.raises(ValueError, match="is not an http\\(s\\) URL"):
        replay.send(url, fixture)


def test_replay_usage_errors() -> None:
    assert run(["--url", "http://127.0.0.1:9/", "/nonexistent.http"])[0] == 2
    code, _, err = run(["--url", "http://127.0.0.1:9/", "--resign", str(FIXTURES)])
    assert code == 2
    assert "--resign needs a signing key: pass --secret" in err
    code, out, _ = run(["--url", "http://127.0.0.1:9/", str(FIXTURES / "amazon-shape" / "2006-05-05.http")])
    assert code == 1
    assert "no answer" in out

"""Settings from the environment, and the hook named by SOAPRECEPTOR_HOOK."""

from __future__ import annotations

from pathlib import Path

import pytest

from soapreceptor import ConfigError, Settings
from soapreceptor.hooks import DEFAULT_HOOK, load_hook, log_event
from soapreceptor.settings import count_setting, signing_secret
from tests import recording_hook
from tests.support import KEY_1, KEY_2


def test_defaults() -> None:
    settings = Settings.from_env({"SOAPRECEPTOR_SECRET": KEY_1})
    assert len(settings.keyring) == 1
    assert settings.hook == DEFAULT_HOOK
    assert settings.public_url == "http://127.0.0.1:8080/"
    assert settings.path == "/"
    assert settings.timestamp_tolerance == 300
    assert settings.accept_unsigned is False
    assert settings.bind == "127.0.0.1:8080"


def test_every_variable(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text(f"# rotated 2026-11\n{KEY_1}\n\n  {KEY_2}  \n")
    settings = Settings.from_env(
        {
            "SOAPRECEPTOR_SECRET": "third",
            "SOAPRECEPTOR_SECRET_FILE": str(secrets),
            "SOAPRECEPTOR_HOOK": "tests.recording_hook:record",
            "SOAPRECEPTOR_PUBLIC_URL": "https://example.org/mturk/notify",
            "SOAPRECEPTOR_TIMESTAMP_TOLERANCE": "0",
            "SOAPRECEPTOR_ACCEPT_UNSIGNED": "1",
            "SOAPRECEPTOR_BIND": "unix:/run/soapreceptor.sock",
        }
    )
    assert len(settings.keyring) == 3
    assert settings.keyring.verify("2006-05-23T23:22:30Z", "FNJJstGUL4jPSEZmY3zS6Cl+gNw=")
    assert settings.keyring.verify("2006-05-23T23:22:30Z", "SCKBAzx2/Kt3aYqRcDjBAqOSm+o=")
    assert settings.path == "/mturk/notify"
    assert settings.timestamp_tolerance == 0
    assert settings.accept_unsigned is True
    assert settings.bind == "unix:/run/soapreceptor.sock"


@pytest.mark.parametrize(
    "bind", ["127.0.0.1:0", "0.0.0.0:65535", "[::1]:8080", "localhost", "unix:/run/x.sock", "fd://3"]
)
def test_every_address_gunicorn_listens_on_is_a_good_bind(bind: str) -> None:
    assert Settings.from_env({"SOAPRECEPTOR_SECRET": "k", "SOAPRECEPTOR_BIND": bind}).bind == bind


@pytest.mark.parametrize(("raw", "count"), [(None, 8), ("", 8), ("   ", 8), ("1", 1), (" 16 ", 16)])
def test_a_count_setting_is_a_whole_number_of_one_or_more_or_its_default(raw: str | None, count: int) -> None:
    env = {} if raw is None else {"SOAPRECEPTOR_THREADS": raw}
    assert count_setting(env, "SOAPRECEPTOR_THREADS", 8) == count


@pytest.mark.parametrize("raw", ["0", "-1", "2.5", "eight", "1e3"])
def test_a_count_setting_refuses_anything_else_by_name(raw: str) -> None:
    with pytest.raises(ConfigError, match=f"^SOAPRECEPTOR_THREADS={raw!r} is not a whole number of 1 or more$"):
        count_setting({"SOAPRECEPTOR_THREADS": raw}, "SOAPRECEPTOR_THREADS", 8)


def test_unsigned_only_is_allowed_without_secret() -> None:
    assert not Settings.from_env({"SOAPRECEPTOR_ACCEPT_UNSIGNED": "1"}).keyring


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SOAPRECEPTOR_SECRET": "k", "SOAPRECEPTOR_TIMESTAMP_TOLERANCE": "soon"}, "SOAPRECEPTOR_TIMESTAMP_TOLERANCE"),
        ({"SOAPRECEPTOR_SECRET": "k", "SOAPRECEPTOR_TIMESTAMP_TOLERANCE": "-1"}, "SOAPRECEPTOR_TIMESTAMP_TOLERANCE"),
        ({"SOAPRECEPTOR_SECRET": "k", "SOAPRECEPTOR_ACCEPT_UNSIGNED": "maybe"}, "SOAPRECEPTOR_ACCEPT_UNSIGNED"),
        (
            {"SOAPRECEPTOR_SECRET": "k", "SOAPRECEPTOR_PUBLIC_URL": "example.org"},
            r"^SOAPRECEPTOR_PUBLIC_URL='example.org' is not an http\(s\) URL such as https://example.org/mturk$",
        ),
        ({"SOAPRECEPTOR_SECRET_FILE": "/nonexistent/secrets"}, "cannot be read"),
        (
            {"SOAPRECEPTOR_SECRET": "k", "SOAPRECEPTOR_BIND": "127.0.0.1:99999"},
            r"SOAPRECEPTOR_BIND='127.0.0.1:99999': port 99999 is not between 0 and 65535$",
        ),
        (
            {"SOAPRECEPTOR_SECRET": "k", "SOAPRECEPTOR_BIND": "[::1]:-1"},
            r"SOAPRECEPTOR_BIND='\[::1\]:-1': port -1 is not between 0 and 65535$",
        ),
        (
            {"SOAPRECEPTOR_SECRET": "k", "SOAPRECEPTOR_BIND": "localhost:http"},
            r"SOAPRECEPTOR_BIND='localhost:http': 'http' is not a valid port number$",
        ),
        (
            {"SOAPRECEPTOR_SECRET": "k", "SOAPRECEPTOR_BIND": "fd://three"},
            r"SOAPRECEPTOR_BIND='fd://three': 'three' is not a valid file descriptor$",
        ),
    ],
)
def test_bad_settings_say_which_and_why(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env(env)


@pytest.mark.parametrize("env", [{}, {"SOAPRECEPTOR_SECRET": "   "}])
def test_a_receptor_needs_a_secret_unless_told_otherwise(env: dict[str, str]) -> None:
    settings = Settings.from_env(env)  # the operators' commands need no secret
    with pytest.raises(ConfigError, match="no secret is configured"):
        settings.require_secret()
    Settings.from_env({**env, "SOAPRECEPTOR_ACCEPT_UNSIGNED": "1"}).require_secret()


def test_a_secret_file_others_can_read_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text(KEY_1 + "\n")
    secrets.chmod(0o600)
    Settings.from_env({"SOAPRECEPTOR_SECRET_FILE": str(secrets)})
    assert "can be read by other users" not in caplog.text
    secrets.chmod(0o644)
    Settings.from_env({"SOAPRECEPTOR_SECRET_FILE": str(secrets)})
    assert "can be read by other users (mode 644); chmod 600 it" in caplog.text
    assert KEY_1 not in caplog.text


def test_secret_file_without_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "secrets"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(ConfigError, match="holds no secret"):
        Settings.from_env({"SOAPRECEPTOR_SECRET_FILE": str(empty)})


def test_errors_never_show_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SOAPRECEPTOR_SECRET": KEY_1, "SOAPRECEPTOR_TIMESTAMP_TOLERANCE": "x"})
    assert KEY_1 not in str(caught.value)
    assert KEY_1 not in repr(Settings.from_env({"SOAPRECEPTOR_SECRET": KEY_1}))


def test_load_hook() -> None:
    assert load_hook("tests.recording_hook:record") is recording_hook.record
    assert load_hook(DEFAULT_HOOK) is log_event
    assert load_hook("os.path:join") is not None  # dotted modules and any callable


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("tests.recording_hook", "package.module:function"),
        (":record", "package.module:function"),
        ("tests.no_such_module:record", "cannot import module 'tests.no_such_module'"),
        ("tests.recording_hook:nope", "has no attribute 'nope'"),
        ("tests.recording_hook:NOT_CALLABLE", r"not callable \(it is of type int\)"),
    ],
)
def test_bad_hooks_are_reported_at_load(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as caught:
        load_hook(spec)
    assert "SOAPRECEPTOR_HOOK" in str(caught.value)


def test_the_tools_sign_with_the_option_then_the_secret_then_the_file(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text(f"# keys\n{KEY_1}\n{KEY_2}\n")
    secrets.chmod(0o600)
    both = {"SOAPRECEPTOR_SECRET": "env-key", "SOAPRECEPTOR_SECRET_FILE": str(secrets)}
    assert signing_secret("option", both) == "option"
    assert signing_secret(None, both) == "env-key"
    assert signing_secret(None, {"SOAPRECEPTOR_SECRET_FILE": str(secrets)}) == KEY_1
    assert signing_secret(None, {}) is None
    with pytest.raises(ConfigError, match="cannot be read"):
        signing_secret(None, {"SOAPRECEPTOR_SECRET_FILE": str(tmp_path / "missing")})

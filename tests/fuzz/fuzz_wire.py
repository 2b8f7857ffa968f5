"""Coverage-guided fuzzing (atheris/libFuzzer) of the gate and the wire parser.

    make fuzz                      # 10 minutes, corpus in .fuzz/corpus
    make fuzz FUZZ_SECONDS=3600

The property: whatever the bytes, the gate and the parser either accept the
message or refuse it with a NotifyFault; any other exception is a crash that
libFuzzer reports with the input that caused it (saved as crash-*). The corpus
starts from the recorded fixtures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from soapreceptor import errors, fixtures, gate, wire


def one_input(data: bytes) -> None:
    try:
        gate.check_body(data)
        wire.parse_notify(data, None)
    except errors.NotifyFault:
        pass


def seed(corpus: Path) -> None:
    """Put every recorded fixture's body in an empty corpus directory."""
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for n, fixture in enumerate(fixtures.standard_set()):
            (corpus / f"fixture-{n:03d}").write_bytes(fixture.body)


def main() -> None:
    directories = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    for directory in directories[:1]:
        seed(directory)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

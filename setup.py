"""soapreceptor: the receiving end of Mechanical Turk's SOAP notification API."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent

setup(
    name="soapreceptor",
    version="0.1.0",
    description="A WSDL-described SOAP receptor for Mechanical Turk's notification API, with a zeep-based sender",
    long_description=(HERE / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    # The top-level wsdl/ folder (the contract people generate stubs from) is
    # installed as soapreceptor/wsdl/, so the service and the sender find the
    # same files in a checkout and in an installed package.
    packages=["soapreceptor", "soapreceptor.wsdl"],
    package_dir={"soapreceptor.wsdl": "wsdl"},
    package_data={"soapreceptor.wsdl": ["*/*.wsdl"]},
    install_requires=[
        # The SOAP service framework: service model, WSDL generation, request cycle.
        # 2.14.0 is its last release; the project pins the series it is tested with.
        "spyne>=2.14,<2.15",
        # Hardened XML parsing of every request (the sans-IO wire layer).
        "lxml>=4.9",
        # The test sender builds its messages from wsdl/ with zeep.
        "zeep>=4.2",
        "gunicorn>=21.2",
        # GET /metrics, added up across gunicorn's processes (multiprocess mode).
        "prometheus-client>=0.17",
        # The spool records' metadata as JSON, on the answer path: a twentieth of the
        # standard json module's time, datetimes included (see soapreceptor/spool.py).
        "orjson>=3.9",
        # In place of the copy of six bundled with spyne 2.14, which breaks on
        # Python 3.12+ (see soapreceptor/spyne_compat.py).
        "six>=1.16",
        # spyne 2.14 imports cgi, which Python 3.13 removed.
        "legacy-cgi>=2.6; python_version >= '3.13'",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "hypothesis>=6.100",  # property-based tests of the wire parser and the whole app
            "ruff>=0.6",
            "mypy>=1.10",
            "lxml-stubs",
            "types-requests",
            "types-six",
            "suds-community",
            # tests/test_bench.py runs the benchmark harness, chart included.
            "matplotlib>=3.7",
        ],
        # `make bench` (benchmarks/): the chart of its results.
        "bench": ["matplotlib>=3.7"],
        # gunicorn's C HTTP parser (picohttpparser), which gunicorn (25 on) takes in place of its
        # Python one wherever it is installed (its http_parser setting, "auto"): 5 to 12 % more
        # messages a second for soapreceptor in side-by-side runs (issue 8). Only as source on the
        # package index: it needs a C compiler (make falls back to gunicorn's Python parser).
        "fast": ["gunicorn>=25", "gunicorn_h1c>=0.6.10"],
    },
    entry_points={
        "console_scripts": ["soapreceptor = soapreceptor.cli:main"],
        "pytest11": ["soapreceptor = soapreceptor.testing"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Framework :: Pytest",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Application",
    ],
)

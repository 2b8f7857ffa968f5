"""gunicorn settings for the receptor; ``deploy/gunicorn.conf.py`` and ``soapreceptor serve`` both use them.

gunicorn reads its settings from this module's globals (``-c
python:soapreceptor.gunicorn_config``). Each can be overridden on gunicorn's
command line or, where named below, from the environment.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
from typing import Any

from gunicorn import glogging

# /metrics adds up the counters of every worker and the dispatcher through
# files in this directory (prometheus-client's multiprocess mode). It must be
# set before any of them imports prometheus_client, so here, first; a fresh
# one per server, removed when the master exits (or, if it was killed, by the
# next server to start: soapreceptor.metrics.server_directory).
_metrics_dir: str | None = None
_metrics_lock = -1
_metrics_owner = 0


def _remove_metrics_dir() -> None:
    """Remove this server's metrics directory, in the master that made it.

    Run at the master's interpreter exit, which every way gunicorn's master
    ends goes through (after ``on_exit``); ``on_exit`` itself is skipped when
    it stops at start (a setting refused here or by the application it
    preloads). The forked workers inherit the exit handler, and must not run it.
    """
    if _metrics_dir is None or os.getpid() != _metrics_owner:
        return
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.close(_metrics_lock)


if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    from soapreceptor import metrics as _metrics  # does not import prometheus_client

    _metrics_dir, _metrics_lock = _metrics.server_directory()
    _metrics_owner = os.getpid()
    atexit.register(_remove_metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

# Requests gunicorn refuses before the application sees them (over its limits
# below, not HTTP at all) get a SOAP fault, not gunicorn's HTML page.
from soapreceptor import affinity, http_faults, scheduling  # noqa: E402 (after PROMETHEUS_MULTIPROC_DIR is set)
from soapreceptor.errors import ConfigError  # noqa: E402
from soapreceptor.server import reexec_args  # noqa: E402
from soapreceptor.settings import DEFAULT_BIND, count_setting  # noqa: E402
from soapreceptor.worker import http_parser as describe_http_parser  # noqa: E402 (a global http_parser: a setting)

http_faults.install()

# Where to listen (SOAPRECEPTOR_BIND): host:port, or unix:/path for a proxy.
bind = [os.environ.get("SOAPRECEPTOR_BIND", "").strip() or DEFAULT_BIND]

# Threaded workers, one per core (SOAPRECEPTOR_WORKERS), each serving up to
# SOAPRECEPTOR_THREADS requests at once. The work of a Notify call is short
# and CPU-bound but for one wait: the fsync of the journal commit that must
# return before the answer. The requests a worker serves meanwhile share its
# next commit (soapreceptor.group_commit), so the disk's sync rate does not cap
# the message rate; threads also keep HTTP/1.1 connections alive. The class is
# gthread with one change: a thread that has answered on a kept-alive connection
# serves its next request itself when it comes at once (soapreceptor.worker).
worker_class = "soapreceptor.worker.ThreadWorker"

# Each worker on a CPU of its own where there is one for each (SOAPRECEPTOR_CPU_AFFINITY,
# "auto" or "off"; see soapreceptor.affinity), and scheduled without preempting the others on
# wake-up (SOAPRECEPTOR_SCHED_POLICY, "batch" or "normal"; see soapreceptor.scheduling).
# All four are checked here, so that a wrong value stops the server with one line naming it:
# gunicorn itself would answer a count that is not a number with a traceback, 0 threads with
# "Worker failed to boot", and 0 workers by serving nothing.
try:
    workers = count_setting(os.environ, "SOAPRECEPTOR_WORKERS", multiprocessing.cpu_count())
    threads = count_setting(os.environ, "SOAPRECEPTOR_THREADS", 8)
    _cpu_affinity = affinity.mode(os.environ)
    _sched_policy = scheduling.policy(os.environ)
except (ConfigError, ValueError) as _exc:
    raise SystemExit(f"soapreceptor: {_exc}") from None


def on_starting(server: Any) -> None:
    """In the master, once: make its upgrade in place (USR2) start the new master the way it was started."""
    server.START_CTX["args"] = reexec_args(server.START_CTX["args"])


def pre_fork(server: Any, worker: Any) -> None:
    """In the master, before a worker forks: choose its CPU (SOAPRECEPTOR_CPU_AFFINITY=auto)."""
    worker.soapreceptor_cpu = None
    if _cpu_affinity == "auto":
        taken = [getattr(other, "soapreceptor_cpu", None) for other in server.WORKERS.values()]
        worker.soapreceptor_cpu = affinity.cpu_for_new_worker(server.num_workers, taken)


def post_fork(server: Any, worker: Any) -> None:
    """In the new worker, before it starts its threads: its scheduling policy, and the CPU chosen for it."""
    if scheduling.apply(_sched_policy):
        server.log.info("soapreceptor: worker %s is scheduled SCHED_BATCH", os.getpid())
    cpu = getattr(worker, "soapreceptor_cpu", None)
    if cpu is not None:
        affinity.pin(cpu)
        server.log.info("soapreceptor: worker %s runs on CPU %s", os.getpid(), cpu)


# Load the application once in the master: the settings and the hook are
# checked before any worker starts (a bad hook stops the server at start),
# and the WSDL documents are built once, with the public URL, before fork.
preload_app = True

# MTurk's SendTestEventNotification waits for the answer: a request that
# takes longer than this is a stuck worker, and gunicorn replaces it.
timeout = 30
graceful_timeout = 30
keepalive = 5

# Request line and header limits: a Notify call has a short line and a few headers.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190

# Trust X-Forwarded-* only from a proxy on this host (FORWARDED_ALLOW_IPS to widen).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# soapreceptor writes one line per request itself (logger soapreceptor.access,
# with request id, version, event count and outcome); gunicorn's is silenced below.
accesslog = None


class Logger(glogging.Logger):
    """gunicorn's logger without its access log.

    With a ``logconfig_dict`` gunicorn builds every access-log line (a dozen
    atoms, a date) even when nothing shows it; soapreceptor logs its own.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


logger_class = Logger

# No log line here names the function or line that logged it: skip looking
# them up on every record (a walk up the stack; the logging module's own switch).
logging._srcfile = None

# gunicorn 25+ opens a control socket at one fixed path per user: two
# receptors on a host would fight over it, and nothing here uses it.
control_socket_disable = True

# SOAPRECEPTOR_LOG_FORMAT=json: one JSON object per line instead of text.
_log_format = "json" if os.environ.get("SOAPRECEPTOR_LOG_FORMAT", "").strip().lower() == "json" else "line"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"()": "soapreceptor.logs.LineFormatter"},
        "json": {"()": "soapreceptor.logs.JsonFormatter"},
    },
    "handlers": {
        # A line for every request: written a batch at a time under load (see soapreceptor.logs).
        "stderr": {
            "class": "soapreceptor.logs.BatchingStreamHandler",
            "formatter": _log_format,
            "stream": "ext://sys.stderr",
        },
    },
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {
        "soapreceptor": {
            "level": os.environ.get("SOAPRECEPTOR_LOG_LEVEL", "INFO"),
            "handlers": ["stderr"],
            "propagate": False,
        },
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
    },
}


# The embedded dispatcher: one process beside the workers that hands journaled
# events to the hook (SOAPRECEPTOR_DISPATCHER=off to run `soapreceptor dispatch`
# elsewhere). It is the master's child and exits if the master goes away.
_dispatcher: subprocess.Popen[bytes] | None = None


def when_ready(server: Any) -> None:
    """Say which HTTP parser gunicorn uses, and start the embedded dispatcher, once the master is listening."""
    global _dispatcher  # noqa: PLW0603 (gunicorn hooks are module functions)
    server.log.info("soapreceptor: gunicorn reads requests with %s", describe_http_parser(server.cfg))
    if os.environ.get("SOAPRECEPTOR_DISPATCHER", "embedded").strip().lower() == "off":
        server.log.info("soapreceptor: no embedded dispatcher (SOAPRECEPTOR_DISPATCHER=off)")
        return
    # Only on CPU time the workers leave (SCHED_IDLE): under a burst the answers
    # (MTurk waits for them) come first, the journal holds the events meanwhile.
    # At nice 10 it still took about a quarter of a core from them at full speed.
    command = [sys.executable, "-m", "soapreceptor.cli", "dispatch", "--parent", str(os.getpid()), "--idle"]
    _dispatcher = subprocess.Popen(command)  # noqa: S603 (our own interpreter and module)
    server.log.info("soapreceptor: dispatcher started (pid %s)", _dispatcher.pid)


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges must not be added up any more."""
    from prometheus_client import multiprocess  # noqa: PLC0415 (after PROMETHEUS_MULTIPROC_DIR is set)

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """Stop the embedded dispatcher with the master (it finishes the event in hand)."""
    if _dispatcher is not None and _dispatcher.poll() is None:
        _dispatcher.terminate()
        try:
            _dispatcher.wait(timeout=graceful_timeout)
        except subprocess.TimeoutExpired:
            _dispatcher.kill()
            _dispatcher.wait()

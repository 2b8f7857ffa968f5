"""The benchmark's gunicorn worker classes: soapreceptor's, or plain gthread, keeping alive every connection taken."""

from typing import Any

from gunicorn.workers.gthread import ThreadWorker as GthreadWorker

from soapreceptor.worker import ThreadWorker


class _KeepAliveAll:
    """Keeps alive every connection the worker accepts.

    The harness caps each worker at its share of the load's connections
    (``worker_connections``; see ``benchmarks/gunicorn_bench.py``). gthread
    keeps alive only ``worker_connections - threads`` idle connections and
    closes the rest after each answer, which with that cap would be every
    one of them: each request would open a new connection.
    """

    worker_connections: int
    max_keepalived: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_keepalived = self.worker_connections

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        return None  # gthread's warning about worker_connections <= threads does not apply here


class ShareThreadWorker(_KeepAliveAll, ThreadWorker):
    """soapreceptor's worker (soapreceptor.worker), as shipped but for keeping alive every connection it takes."""


class ShareGthreadWorker(_KeepAliveAll, GthreadWorker):
    """Plain gthread, but for keeping alive every connection it takes: to compare soapreceptor's worker with."""

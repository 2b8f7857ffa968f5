"""The gunicorn worker class of the benchmark: gthread, keeping alive every connection it takes."""

from typing import Any

from gunicorn.workers.gthread import ThreadWorker


class ShareThreadWorker(ThreadWorker):
    """gthread, keeping alive every connection it accepts.

    The harness caps each worker at its share of the load's connections
    (``worker_connections``; see ``benchmarks/gunicorn_bench.py``). gthread
    keeps alive only ``worker_connections - threads`` idle connections and
    closes the rest after each answer, which with that cap would be every
    one of them: each request would open a new connection.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_keepalived = self.worker_connections

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        return None  # gthread's warning about worker_connections <= threads does not apply here

"""The gunicorn worker class of the benchmark: gthread, keeping alive every connection it takes."""

from typing import Any

from gunicorn.workers.gthread import ThreadWorker


class ShareThreadWorker(ThreadWorker):
    """gthread, keeping alive every connection it accepts.

    Each worker takes at most its share of the load generator's keep-alive
    connections (``worker_connections``, set by the harness): otherwise
    whichever worker wins the race for the first accepts may keep most of
    them, and a run measures that luck. But gthread keeps alive only
    ``worker_connections - threads`` idle connections and closes the rest
    after each answer, which with the share as the cap would be every one of
    them: each request would open a new connection.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_keepalived = self.worker_connections

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        return None  # gthread's warning about worker_connections <= threads does not apply here

"""The one gunicorn configuration all three receptors run under in the benchmark.

soapreceptor's own settings (``soapreceptor.gunicorn_config``), with the
worker count and class the harness asks for. The embedded dispatcher starts
only where ``SOAPRECEPTOR_DISPATCHER`` is not ``off``: the harness turns it off
for the two peers, which have no journal.
"""

import os

from soapreceptor.gunicorn_config import *  # noqa: F403

workers = int(os.environ["BENCH_WORKERS"])
# soapreceptor's worker as shipped (or plain gthread, to compare), but keeping alive every
# connection each worker takes (see benchmarks/workers.py). Any other class as given.
worker_class = {
    "soapreceptor": "benchmarks.workers.ShareThreadWorker",
    "gthread": "benchmarks.workers.ShareGthreadWorker",
}.get(os.environ["BENCH_WORKER_CLASS"], os.environ["BENCH_WORKER_CLASS"])
threads = int(os.environ.get("BENCH_THREADS", "1"))
# Each worker takes at most its share of the load generator's keep-alive
# connections (the harness sets it): otherwise whichever worker wins the race
# for the first accepts may keep most of them, and a run measures that luck.
worker_connections = int(os.environ.get("BENCH_WORKER_CONNECTIONS", "1000"))

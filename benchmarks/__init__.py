"""The benchmark harness: soapreceptor measured beside a naive spyne receptor and the bare limit.

``make bench`` runs :mod:`benchmarks.harness`; the results land in
``benchmarks/results/``. Nothing here is installed with the package.
"""

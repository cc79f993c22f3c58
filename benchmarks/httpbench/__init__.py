"""The parts of `benchmarks/bench_http.py`: cases, wrk, server processes, metrics, the report.

The benchmark script (`bench_http.py`) composes them; each is importable on its own (the tests in
`tests/benchmarks/` use them without a network beyond 127.0.0.1).
"""

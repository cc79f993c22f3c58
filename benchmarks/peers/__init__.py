"""Peer servers for `benchmarks/bench_http.py`: the same muon pT network shape served by other stacks.

Each module is a script, `python benchmarks/peers/<name>.py --port P`, that listens on 127.0.0.1 only:

- `bare_asgi`: a raw ASGI app on uvicorn (httptools, uvloop, orjson): the ceiling for Python HTTP.
- `naive_fastapi`: FastAPI with a pydantic request model, numpy per request (the paper's per-call pattern).
- `kserve_server`: KServe's python `ModelServer` with a v2 (Open Inference Protocol) model; runs in
  its own virtualenv (`.venv-kserve`), since its pins may clash with ours.

All three compute `network.muon_network()`: float32 numpy, random weights with a fixed seed.
"""

"""Benchmark the web API: latency of POST /api/predict (target: p95 <= 50 ms), beside /api/fit
and /api/estimate, over real HTTP on loopback.

    .venv/bin/python scripts/bench_web_predict.py                  # 400 requests per route
    .venv/bin/python scripts/bench_web_predict.py --requests 2000 --artifact DIR

The server is `vram-ml serve`'s app under uvicorn in this process (a thread), the client one
keep-alive connection (http.client), one request at a time, as the page sends them. Each
request is a different spec (models x batch x cutoff x method), so no answer is cached.
Latency = send to last byte received. Prints p50 / p95 / p99 / max per route in ms. Not a test:
figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import socket
import statistics
import sys
import threading
import time

MODELS = ["meta-llama/Meta-Llama-3-8B-Instruct", "Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-0.5B",
          "google/gemma-2-9b", "Qwen/Qwen2-VL-7B-Instruct", "meta-llama/Llama-3.1-70B"]


def specs():
    methods = [{"method": "lora"}, {"method": "qlora", "quant_bits": 4}, {"method": "full"}]
    for model, batch, seq, method in itertools.cycle(
        itertools.product(MODELS, (1, 2, 4, 8, 16), (512, 1024, 2048, 4096), methods)
    ):
        yield {"model": model, "batch_size": batch, "seq_len": seq, "precision": "bf16", **method}


def serve() -> int:
    import uvicorn

    from vram_ml.web.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return port


def timed(connection: http.client.HTTPConnection, path: str, body: dict) -> float:
    payload = json.dumps(body).encode()
    start = time.perf_counter()
    connection.request("POST", path, payload, {"content-type": "application/json"})
    response = connection.getresponse()
    response.read()
    elapsed = time.perf_counter() - start
    if response.status != 200:
        raise SystemExit(f"{path}: HTTP {response.status} for {body}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per route")
    parser.add_argument("--artifact", help="learned-model folder (default: as served)")
    args = parser.parse_args()
    if args.artifact:
        os.environ["VRAM_ML_LEARNED_MODEL"] = args.artifact
    port = serve()
    connection = http.client.HTTPConnection("127.0.0.1", port)
    cards = ["rtx-4090", "a100-40gb", "l40s", "a100-80gb", "h100-80gb", "h200"]
    routes = {
        "/api/predict": lambda spec: {"spec": spec, "cards": cards},
        "/api/fit": lambda spec: {"spec": spec, "card": "rtx-4090"},
        "/api/estimate": lambda spec: {"spec": spec},
    }
    print(f"{args.requests} requests per route, one at a time, http://127.0.0.1:{port}",
          file=sys.stderr)
    print(f"{'route':<16}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for path, body in routes.items():
        source = specs()
        for _ in range(20):  # warm-up: first imports, caches of catalog configs
            timed(connection, path, body(next(source)))
        times = sorted(timed(connection, path, body(next(source))) * 1000
                       for _ in range(args.requests))
        q = statistics.quantiles(times, n=100)
        print(f"{path:<16}{q[49]:>9.1f}{q[94]:>9.1f}{q[98]:>9.1f}{times[-1]:>9.1f}")
    answer = "learned" if args.artifact else "as served (analytical fallback unless bundled)"
    print(f"predict target: p95 <= 50 ms; answers by {answer}")


if __name__ == "__main__":
    main()

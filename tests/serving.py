"""A Serve app on a fresh local Ray, for the test modules that talk to it over HTTP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def running_app(options: dict[str, Any], port: int, num_cpus: int = 2) -> Iterator[Any]:
    """The parakeet app built with `options`, serving HTTP on 127.0.0.1:`port`; yields its handle."""
    import ray
    from ray import serve

    from deployments.app import build_app

    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")  # a busy 2-core machine starts slowly
    ray.init(
        address="local", num_cpus=num_cpus, include_dashboard=False
    )  # a fresh Ray even if a `ray start` cluster left its address
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield serve.run(build_app(options), name="parakeet", route_prefix="/")
    finally:
        serve.shutdown()
        ray.shutdown()


def encoder_batch_sizes(timeout_s: float = 90.0) -> tuple[int, int]:
    """(batches, batches of more than one window) the Encoder has run, from its `parakeet_encoder_batch_size`
    histogram on this Ray node's Prometheus endpoint, once the metrics agent has exported any (within seconds)."""
    import re
    import time

    import ray
    import requests

    node = ray._private.worker.global_worker.node
    url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
    deadline = time.monotonic() + timeout_s
    while True:
        text = requests.get(url, timeout=10).text
        counts = re.findall(r"^ray_parakeet_encoder_batch_size_count\{[^}]*\} (\S+)$", text, re.M)
        singles = re.findall(r'^ray_parakeet_encoder_batch_size_bucket\{[^}]*le="1\.0"[^}]*\} (\S+)$', text, re.M)
        if counts or time.monotonic() > deadline:
            total = int(sum(float(count) for count in counts))
            return total, total - int(sum(float(single) for single in singles))
        time.sleep(1.0)

"""What one Serve call between deployments costs, by the size of its argument: the hop every request makes from the
ingress to the Encoder (a 5 s clip's features are 500 x 128 float32, 256 KB).

    python bench/serve_call_cost.py                 # on a Ray with the pipeline's settings (pipeline/resources.py)
    python bench/serve_call_cost.py --ray-default   # on a Ray with Ray's own (arguments over 100 KB go through
                                                    # the object store)

Prints one markdown table (for BENCHMARKS.md): the median wall time of sequential calls made from inside a replica,
to a plain method and to one behind `@serve.batch` as the Encoder's was until 5b9bd21, and of a plain Ray actor
call beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import ray
from ray import serve

from pipeline.resources import local_ray

SIZES_KB = (0, 64, 128, 256, 512, 1024)


@serve.deployment(max_ongoing_requests=256)
class Callee:
    async def plain(self, argument: np.ndarray) -> int:
        return 1

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def _batched(self, arguments: list[np.ndarray]) -> list[int]:
        return [1] * len(arguments)

    async def batched(self, argument: np.ndarray) -> int:
        return await self._batched(argument)


@serve.deployment
class Caller:
    def __init__(self, callee: serve.handle.DeploymentHandle) -> None:
        self.callee = callee

    async def medians_ms(self, calls: int) -> dict[tuple[str, int], float]:
        """Median ms of `calls` sequential calls per (method, argument KB)."""
        medians = {}
        for size in SIZES_KB:
            argument = np.zeros(size * 256, np.float32)
            for method in ("plain", "batched"):
                times = []
                for _ in range(calls):
                    started = time.perf_counter()
                    await getattr(self.callee, method).remote(argument)
                    times.append(time.perf_counter() - started)
                medians[method, size] = statistics.median(times) * 1000
        return medians


@ray.remote
class Actor:
    def plain(self, argument: np.ndarray) -> int:
        return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="sequential calls per cell")
    parser.add_argument("--ray-default", action="store_true", help="Ray's own settings, not the pipeline's")
    args = parser.parse_args()
    options = {"include_dashboard": False, "logging_level": "ERROR"}
    if args.ray_default:
        ray.init(address="local", **options)
    else:
        local_ray(**options)
    serve.start(http_options={"host": "127.0.0.1", "port": 8127})
    caller = serve.run(Caller.bind(Callee.bind()), name="calls", route_prefix=None)
    caller.medians_ms.remote(20).result()  # warm-up
    medians = caller.medians_ms.remote(args.calls).result()
    actor = Actor.remote()
    actor_ms = {}
    for size in SIZES_KB:
        argument = np.zeros(size * 256, np.float32)
        ray.get(actor.plain.remote(argument))
        times = []
        for _ in range(args.calls):
            started = time.perf_counter()
            ray.get(actor.plain.remote(argument))
            times.append(time.perf_counter() - started)
        actor_ms[size] = statistics.median(times) * 1000
    serve.shutdown()
    ray.shutdown()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, ray {ray.__version__}, "
        f"{'Ray defaults' if args.ray_default else 'pipeline settings'}\n"
    )
    print("| argument | Serve call, plain ms | Serve call, `@serve.batch` ms | Ray actor call from the driver ms |")
    print("|---|---|---|---|")
    for size in SIZES_KB:
        print(f"| {size} KB | {medians['plain', size]:.2f} | {medians['batched', size]:.2f} | {actor_ms[size]:.2f} |")


if __name__ == "__main__":
    main()

"""Where the encoder runs on a Ray cluster, for the Serve app and the batch job alike."""

from __future__ import annotations

import os

import ray

DEVICES = ("auto", "cuda", "cpu")


# Ray's settings for a cluster that runs the pipeline. Arguments and results up to max_direct_call_object_size travel
# inside the call instead of through the object store (Ray's default: 100 KB), so the features of a window of up to
# 30 s (3000 frames x 128 mels, float32: 1.5 MB) and an upload of that size reach the next stage without a put and a
# get through the raylet: on the 2-core machine of BENCHMARKS.md, 5-8 CPU-ms less per request. cluster.yaml sets the
# same on its nodes (RAY_max_direct_call_object_size).
SYSTEM_CONFIG = {"max_direct_call_object_size": 2 * 1024 * 1024}


def local_ray(**options: object) -> ray._private.worker.BaseContext:
    """A new Ray of this process's own, with the pipeline's settings (`options`: ray.init's)."""
    return ray.init(address="local", _system_config=SYSTEM_CONFIG, **options)


def start_ray() -> ray._private.worker.BaseContext:
    """Join the cluster at $RAY_ADDRESS (`auto`: one `ray start` began on this machine), else start a Ray of this
    process's own. Never, unasked, a cluster an earlier `ray start` left: a dead one's address hangs the start."""
    address = os.environ.get("RAY_ADDRESS")
    return ray.init(address=address) if address else local_ray()


def resolve_device(device: str) -> str:
    """`auto` picks cuda when the Ray cluster has any GPU, so a CPU-only machine needs no flag."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device != "auto":
        return device
    return "cuda" if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def cpu_threads(requested: int | None) -> int:
    """Torch threads of an encoder on cpu: the number asked for, else all the machine's cores but one, which the CPU
    stages beside it need (the proxy and ingress replicas, the batch job's featurize and decode tasks). Ray's own
    OMP_NUM_THREADS=1 would leave the rest of a large node idle while it encodes; all of a small one's cores would
    oversubscribe them: on 2 cores the Serve app with the embedded model served 1.3x more with one encoder thread
    than with two (BENCHMARKS.md)."""
    return requested if requested is not None else max(1, (os.cpu_count() or 1) - 1)


def check_threads(name: str, threads: int | None) -> None:
    """A configured thread count: None (the default) or at least one."""
    if threads is not None and threads < 1:
        raise ValueError(f"{name} must be at least 1, got {threads}")


def encoder_resources(device: str) -> dict[str, float]:
    """The Ray resources one encoder replica or actor asks for: a CPU to drive it, and a whole GPU on cuda."""
    return {"num_cpus": 1, "num_gpus": 1} if device == "cuda" else {"num_cpus": 1}

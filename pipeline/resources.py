"""Where the encoder runs on a Ray cluster, for the Serve app and the batch job alike."""

from __future__ import annotations

import os

import ray

DEVICES = ("auto", "cuda", "cpu")


def start_ray() -> ray._private.worker.BaseContext:
    """Join the cluster at $RAY_ADDRESS (`auto`: one `ray start` began on this machine), else start a Ray of this
    process's own. Never, unasked, a cluster an earlier `ray start` left: a dead one's address hangs the start."""
    return ray.init(address=os.environ.get("RAY_ADDRESS") or "local")


def resolve_device(device: str) -> str:
    """`auto` picks cuda when the Ray cluster has any GPU, so a CPU-only machine needs no flag."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device != "auto":
        return device
    return "cuda" if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def cpu_threads(requested: int | None) -> int:
    """Torch threads of an encoder on cpu: the number asked for, else all the machine's cores. Ray sets
    OMP_NUM_THREADS to an actor's num_cpus (one), which would leave the rest of the cores idle while it encodes."""
    return requested or os.cpu_count() or 1


def encoder_resources(device: str) -> dict[str, float]:
    """The Ray resources one encoder replica or actor asks for: a CPU to drive it, and a whole GPU on cuda."""
    return {"num_cpus": 1, "num_gpus": 1} if device == "cuda" else {"num_cpus": 1}

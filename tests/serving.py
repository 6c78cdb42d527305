"""A Serve app on a fresh local Ray, or serve_config_cluster.yaml on a local cluster of cluster.yaml's node types,
for the test modules (and benchmarks) that talk to it over HTTP."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
SERVE_CONFIG = ROOT / "serve_config_cluster.yaml"


@contextmanager
def running_app(options: dict[str, Any], port: int, num_cpus: int = 2) -> Iterator[Any]:
    """The parakeet app built with `options`, serving HTTP on 127.0.0.1:`port`; yields its handle."""
    import ray
    from ray import serve

    from deployments.app import build_app
    from pipeline.resources import local_ray

    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")  # a busy 2-core machine starts slowly
    local_ray(num_cpus=num_cpus, include_dashboard=False)  # a fresh Ray even if a `ray start` cluster left its address
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield serve.run(build_app(options), name="parakeet", route_prefix="/")
    finally:
        serve.shutdown()
        ray.shutdown()


METRICS_REPORT_S = 12  # longer than Ray's metrics report interval (10 s): an observation is exported by then


def encoder_batch_sizes(timeout_s: float = 90.0) -> tuple[int, int]:
    """(batches, batches of more than one window) the Encoder has run, from its `parakeet_encoder_batch_size`
    histogram on this Ray node's Prometheus endpoint: read once the metrics agent exports any, and again a report
    interval later, so that every batch run before the call is counted."""
    import re
    import time

    import ray
    import requests

    node = ray._private.worker.global_worker.node
    url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"

    def read() -> tuple[list[str], list[str]]:
        text = requests.get(url, timeout=10).text
        counts = re.findall(r"^ray_parakeet_encoder_batch_size_count\{[^}]*\} (\S+)$", text, re.M)
        singles = re.findall(r'^ray_parakeet_encoder_batch_size_bucket\{[^}]*le="1\.0"[^}]*\} (\S+)$', text, re.M)
        return counts, singles

    deadline = time.monotonic() + timeout_s
    while not read()[0] and time.monotonic() < deadline:
        time.sleep(1.0)
    time.sleep(METRICS_REPORT_S)
    counts, singles = read()
    total = int(sum(float(count) for count in counts))
    return total, total - int(sum(float(single) for single in singles))


def node_args(node_type: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    """Cluster.add_node arguments for a cluster.yaml node type: its `resources`, over the stand-in counts."""
    resources = dict(node_type["resources"])
    declared = {
        name: resources.pop(key) for key, name in (("CPU", "num_cpus"), ("GPU", "num_gpus")) if key in resources
    }
    return {**counts, **declared, "resources": resources}


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 300, every_s: float = 1.0) -> Any:
    """Poll `condition` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout_s:.0f} s")
        time.sleep(every_s)
    return result


def app_status() -> str | None:
    from ray import serve

    application = serve.status().applications.get("parakeet")
    return application and application.status


@dataclass(frozen=True)
class Deployed:
    nodes: dict[str, list[Any]]  # ray._private.node.Node of each cluster.yaml node type
    dashboard: str
    config_path: Path  # the serve config deployed

    def replicas(self, deployment: str) -> list[Any]:
        """The live replica actors (ray.util.state ActorState) of one of the app's deployments."""
        from ray.util.state import list_actors

        return list_actors(
            address=self.dashboard,
            filters=[("class_name", "=", f"ServeReplica:parakeet:{deployment}"), ("state", "=", "ALIVE")],
        )

    def replica_node_types(self, deployment: str) -> set[str]:
        by_id = {node.node_id: name for name, nodes in self.nodes.items() for node in nodes}
        return {by_id[actor.node_id] for actor in self.replicas(deployment)}

    def metrics(self, node_type: str) -> str:
        """The first node of a type's Prometheus endpoint: --metrics-export-port in cluster.yaml."""
        node = self.nodes[node_type][0]
        return f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"


@contextmanager
def deployed_cluster(
    workdir: Path,
    port: int,
    app_options: dict[str, Any],
    api_key: str,
    node_counts: dict[str, tuple[int, dict[str, int]]],
    edit: Callable[[dict[str, Any]], None] = lambda config: None,
) -> Iterator[Deployed]:
    """serve_config_cluster.yaml, deployed with `serve deploy` as the README says, on a local cluster with
    `node_counts[type]` = (nodes, stand-in CPU and GPU counts) of each cluster.yaml node type, HTTP on
    127.0.0.1:`port`, `app_options` over the file's args, clients' key `api_key`; `edit` may change the config."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from pipeline.resources import serve_environment_applied

    node_types = yaml.safe_load(CLUSTER_YAML.read_text())["available_node_types"]
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["http_options"].update(host="127.0.0.1", port=port)
    # Every node of this cluster is this machine, which has room for one HAProxy (its stats and metrics ports).
    config["proxy_location"] = "HeadOnly"
    assert config["applications"][0]["args"]["api_key_file"], "the cluster's HTTP API takes keys"
    key_file = workdir / "api_keys"
    key_file.write_text(f"# clients' keys\n{api_key}\n")
    config["applications"][0]["args"].update(app_options, api_key_file=str(key_file))
    edit(config)
    config_path = workdir / SERVE_CONFIG.name
    config_path.write_text(yaml.safe_dump(config))
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")  # a busy 2-core machine starts slowly
    with serve_environment_applied():  # every node's Ray processes inherit it, as cluster.yaml's nodes have it
        # The dashboard serves list_actors; port None: the first free one from 8265, which another cluster may hold.
        count, counts = node_counts["head"]
        head = {**node_args(node_types["head"], counts), "include_dashboard": True, "dashboard_port": None}
        local = Cluster(initialize_head=True, head_node_args=head)
        try:
            nodes = {"head": [local.head_node]}
            for name in ("cpu_worker", "gpu_worker"):
                count, counts = node_counts[name]
                nodes[name] = [local.add_node(**node_args(node_types[name], counts)) for _ in range(count)]
            ray.init(address=local.address)
            deployed = Deployed(nodes, f"http://{local.head_node.webui_url}", config_path)
            subprocess.run(["serve", "deploy", str(config_path), "--address", deployed.dashboard], check=True)
            wait_for(lambda: app_status() == "RUNNING", "the app to run")
            yield deployed
        finally:
            serve.shutdown()
            ray.shutdown()
            local.shutdown()

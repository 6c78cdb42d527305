"""The multi-node set-up: cluster.yaml against Ray's own schema, and serve_config_cluster.yaml deployed on a local
cluster of cluster.yaml's node types, where the GPU worker declares a GPU that CUDA does not have."""

from __future__ import annotations

import asyncio
import logging
import shlex
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import ray
import requests
import torch
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.exceptions import ActorDiedError

from deployments.config import AppConfig
from model import load_model
from tests.serving import CLUSTER_YAML, SERVE_CONFIG, Deployed, app_status, deployed_cluster, wait_for
from tests.test_serve import flac_bytes

serve = pytest.importorskip("ray.serve")  # as in test_serve: it also hides the warnings Ray's own models raise

PORT = 8124
URL = f"http://127.0.0.1:{PORT}"
# Small buckets and one encoder thread, as in test_serve; `device` stays the file's cuda, and `api_key_file` is
# replaced by a file the fixture writes.
APP_OPTIONS = {"batch_sizes": [1, 8], "frame_counts": [300, 600], "context_seconds": 1.0, "encoder_threads": 1}
API_KEY = "cluster-test-key"
# One node of each type, with stand-ins for the CPU and GPU counts EC2 reports; `resources` come from cluster.yaml.
NODE_COUNTS = {"head": (1, {}), "cpu_worker": (1, {"num_cpus": 2}), "gpu_worker": (1, {"num_cpus": 1, "num_gpus": 1})}
CPU_DEPLOYMENTS = ("Transcriber",)


def launcher_config(path: Path) -> dict[str, Any]:
    """The config as `ray up` checks it before it touches the cloud: filled out with the provider's defaults, then
    validated against ray/autoscaler/ray-schema.json."""
    config = prepare_config(yaml.safe_load(path.read_text()))
    validate_config(config)
    return config


def test_cluster_yaml_passes_rays_schema() -> None:
    config = launcher_config(CLUSTER_YAML)
    types = config["available_node_types"]
    assert config["provider"]["type"] == "aws" and config["head_node_type"] == "head"
    assert types["head"]["resources"] == {"CPU": 0}
    assert [name for name, kind in types.items() if "cpu_stage" in kind["resources"]] == ["cpu_worker"]
    assert {name: (kind["min_workers"], kind["max_workers"]) for name, kind in types.items()} == {
        "head": (0, 0),
        "cpu_worker": (1, 8),
        "gpu_worker": (1, 8),
    }
    assert config["idle_timeout_minutes"] == 10
    assert config["setup_commands"] == ["pip install -q -e ~/parakeet-serve"]
    assert {Path(local).name for local in config["file_mounts"].values()} >= {"pyproject.toml", "deployments"}
    assert all(
        "ray start" in command[-1]
        for command in (config["head_start_ray_commands"], config["worker_start_ray_commands"])
    )


def test_every_node_starts_ray_with_the_settings_a_local_ray_has() -> None:
    from pipeline.resources import CONTROL_LOOP, HAPROXY_MODE, SYSTEM_CONFIG, THROUGHPUT_MODE

    config = yaml.safe_load(CLUSTER_YAML.read_text())
    expected = {f"RAY_{name}={value}" for name, value in SYSTEM_CONFIG.items()}
    expected |= {f"{name}={value}" for name, value in {**THROUGHPUT_MODE, **CONTROL_LOOP, **HAPROXY_MODE}.items()}
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        environment = shlex.split(commands[-1].split("ray start")[0].split(";")[-1])
        assert expected <= set(environment), expected - set(environment)


@pytest.mark.parametrize(
    "key, typo",
    [
        ("idle_timeout_minutes", "idle_timout_minutes"),  # top level
        ("min_workers", "min_worker"),  # in a node type
        ("pull_before_run", "pull_before_runs"),
    ],
)  # in docker
def test_a_misspelled_key_fails_the_schema(tmp_path: Path, key: str, typo: str) -> None:
    text = CLUSTER_YAML.read_text()
    assert f" {key}:" in text or f"\n{key}:" in text
    copy = tmp_path / "cluster.yaml"
    copy.write_text(text.replace(f"{key}:", f"{typo}:"))
    with pytest.raises(jsonschema.ValidationError, match=f"'{typo}' was unexpected"):
        launcher_config(copy)


def test_serve_config_asks_only_for_resources_its_node_types_have() -> None:
    from ray.serve.schema import ServeDeploySchema

    node_types = yaml.safe_load(CLUSTER_YAML.read_text())["available_node_types"]
    [app] = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_CONFIG.read_text())).applications
    options = {deployment.name: deployment for deployment in app.deployments}
    assert AppConfig.from_dict(app.args).device == "cuda"
    for name in CPU_DEPLOYMENTS:
        actor = options[name].ray_actor_options
        assert not actor.num_gpus and set(actor.resources) == {"cpu_stage"}
    encoder = options["Encoder"]
    assert encoder.ray_actor_options.num_gpus == 1 and not encoder.ray_actor_options.resources
    assert encoder.autoscaling_config["max_replicas"] == node_types["gpu_worker"]["max_workers"]


def test_an_encoder_placed_for_cuda_falls_back_to_cpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from deployments.encoder import usable_device

    logging.getLogger("ray.serve").addHandler(caplog.handler)  # Serve's logger does not propagate to the root
    try:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert usable_device("cuda") == "cpu" and usable_device("cpu") == "cpu"
        assert "torch.cuda.is_available() is False: running on cpu" in caplog.text
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert usable_device("cuda") == "cuda"
    finally:
        logging.getLogger("ray.serve").removeHandler(caplog.handler)


class FlakyStage:
    """A stand-in DeploymentHandle whose first `deaths` calls die with their replica."""

    deployment_name = "Encoder"

    def __init__(self, deaths: int) -> None:
        self.deaths, self.calls = deaths, 0

    async def remote(self, value: int) -> int:
        self.calls += 1
        if self.calls <= self.deaths:
            raise ActorDiedError()
        return value * 2


def test_a_call_lost_with_its_replica_is_resent_then_gives_up() -> None:
    from deployments.ingress import STAGE_ATTEMPTS, StageUnavailableError, call_stage

    stage = FlakyStage(deaths=STAGE_ATTEMPTS - 1)
    assert asyncio.run(call_stage(stage, 21)) == 42 and stage.calls == STAGE_ATTEMPTS
    stage = FlakyStage(deaths=STAGE_ATTEMPTS)
    with pytest.raises(StageUnavailableError, match="Encoder lost its replica 3 times in a row"):
        asyncio.run(call_stage(stage, 21))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """serve_config_cluster.yaml, deployed with `serve deploy` as the README says, on one node of each type."""
    with deployed_cluster(tmp_path_factory.mktemp("cluster"), PORT, APP_OPTIONS, API_KEY, NODE_COUNTS) as deployed:
        yield deployed


@pytest.fixture(scope="module")
def model():
    return load_model()


def transcribe_over_http(audio: np.ndarray) -> requests.Response:
    return requests.post(
        f"{URL}/v1/audio/transcriptions",
        files={"file": ("speech.flac", flac_bytes(audio))},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=180,
    )


@pytest.mark.slow
def test_each_stage_runs_on_its_node_type(cluster: Deployed) -> None:
    for deployment in CPU_DEPLOYMENTS:
        assert cluster.replica_node_types(deployment) == {"cpu_worker"}, deployment
    assert cluster.replica_node_types("Encoder") == {"gpu_worker"}


@pytest.mark.slow
def test_an_encoder_on_a_node_without_cuda_answers_with_cpu_math(cluster: Deployed, model, unseen_speech) -> None:
    from pipeline.resources import resolve_device

    assert resolve_device("auto") == "cuda"  # the cluster has a GPU, so auto would pick it too
    clips = unseen_speech[1][:4]
    answers = [transcribe_over_http(clip) for clip in clips]
    assert [answer.json()["text"] for answer in answers] == [t.text for t in model.transcribe(clips)]


@pytest.mark.slow
def test_the_cluster_api_lets_in_only_requests_with_a_key(cluster: Deployed, unseen_speech) -> None:
    unkeyed = requests.post(
        f"{URL}/v1/audio/transcriptions", files={"file": ("speech.flac", flac_bytes(unseen_speech[1][0]))}, timeout=60
    )
    assert unkeyed.status_code == 401 and unkeyed.json()["error"]["code"] == "invalid_api_key"
    assert requests.get(f"{URL}/healthz", timeout=10).status_code == 200  # the load balancer's check needs no key


def exported_metrics(endpoint: str) -> dict[str, str]:
    """Our metrics on a Prometheus endpoint: name -> type. Ray prefixes application metrics with `ray_`."""
    lines = requests.get(endpoint, timeout=10).text.splitlines()
    types = (line.split() for line in lines if line.startswith("# TYPE ray_parakeet_"))  # "# TYPE name kind"
    return {name: kind for _, _, name, kind in types}


@pytest.mark.slow
def test_our_metrics_reach_the_prometheus_endpoint_of_their_node(cluster: Deployed, unseen_speech) -> None:
    assert transcribe_over_http(unseen_speech[1][0]).status_code == 200
    assert wait_for(lambda: exported_metrics(cluster.metrics("cpu_worker")), "the ingress's metrics", 90) == {
        "ray_parakeet_audio_seconds_total": "counter",
        "ray_parakeet_request_rtfx": "histogram",
    }
    assert wait_for(lambda: exported_metrics(cluster.metrics("gpu_worker")), "the encoder's metrics", 90) == {
        "ray_parakeet_encoder_batch_size": "histogram",
        "ray_parakeet_encoder_batch_fill_ratio": "histogram",
        "ray_parakeet_encoder_queue_wait_seconds": "histogram",
    }
    assert exported_metrics(cluster.metrics("head")) == {}


@pytest.mark.slow
def test_a_killed_encoder_replica_loses_no_request(cluster: Deployed, model, unseen_speech) -> None:
    clips = [unseen_speech[1][i % 12] for i in range(24)]
    expected = [t.text for t in model.transcribe(clips)]
    [victim] = cluster.replicas("Encoder")
    with ThreadPoolExecutor(len(clips)) as pool:
        futures = [pool.submit(transcribe_over_http, clip) for clip in clips]
        wait_for(lambda: any(future.done() for future in futures), "the first answer", 120, 0.05)
        in_flight = sum(not future.done() for future in futures)
        ray.kill(ray.get_actor(victim.name, namespace="serve"), no_restart=True)
    assert in_flight > 0
    for future, text in zip(futures, expected):
        answer = future.result()  # an answer, as the requests' timeout would raise here: none hangs
        if answer.status_code == 503:
            assert "retry the request" in answer.json()["error"]["message"]
        else:
            assert answer.status_code == 200 and answer.json()["text"] == text
    [revived] = wait_for(
        lambda: [a for a in cluster.replicas("Encoder") if a.actor_id != victim.actor_id],
        "Serve to replace the replica",
    )
    assert revived.node_id == cluster.nodes["gpu_worker"][0].node_id
    wait_for(lambda: app_status() == "RUNNING", "the app to recover")
    assert transcribe_over_http(clips[0]).json()["text"] == expected[0]


@pytest.mark.slow
def test_a_batching_change_reaches_the_running_replicas(cluster: Deployed, unseen_speech) -> None:
    """The Encoder's and the Transcriber's batching is their user_config: `serve deploy` of a changed one
    reconfigures the replicas it has, without starting new ones (which would load and warm the model again)."""
    before = {name: {actor.actor_id for actor in cluster.replicas(name)} for name in ("Encoder", "Transcriber")}
    config = yaml.safe_load(cluster.config_path.read_text())
    for deployment in config["applications"][0]["deployments"]:
        if deployment["name"] in before:
            deployment["user_config"] = {"batch_wait_timeout_s": 0.002, "max_batch_size": 4}
    changed = cluster.config_path.with_name("changed.yaml")
    changed.write_text(yaml.safe_dump(config))
    deployed_at = serve.status().applications["parakeet"].last_deployed_time_s
    subprocess.run(["serve", "deploy", str(changed), "--address", cluster.dashboard], check=True)
    wait_for(
        lambda: (
            serve.status().applications["parakeet"].last_deployed_time_s > deployed_at and app_status() == "RUNNING"
        ),
        "the new config to apply",
    )
    assert transcribe_over_http(unseen_speech[1][0]).status_code == 200
    assert {name: {actor.actor_id for actor in cluster.replicas(name)} for name in before} == before

"""Autoscaling, proven: serve_config_cluster.yaml on a local cluster with three nodes that declare a GPU. Under
sustained load the Encoder grows from one replica to three, each on a GPU node of its own; when the load ends it
returns to one; no request fails or is lost meanwhile. The delays are short here (a test config); the production
values stay in serve_config_cluster.yaml."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from model import load_model
from tests.serving import Deployed, deployed_cluster, wait_for
from tests.test_serve import flac_bytes

serve = pytest.importorskip("ray.serve")  # as in test_serve: it also hides the warnings Ray's own models raise

pytestmark = pytest.mark.slow

PORT = 8130
URL = f"http://127.0.0.1:{PORT}"
API_KEY = "autoscaling-test-key"
APP_OPTIONS = {"batch_sizes": [1, 8], "frame_counts": [300, 600], "context_seconds": 1.0, "encoder_threads": 1}
GPU_NODES = 3
NODE_COUNTS = {
    "head": (1, {}),
    "cpu_worker": (1, {"num_cpus": 2}),
    "gpu_worker": (GPU_NODES, {"num_cpus": 1, "num_gpus": 1}),
}
# Seconds, where the production config has 30 and 600: scale at once, and drain soon after the load ends.
TEST_AUTOSCALING = {
    "max_replicas": GPU_NODES,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 1,
    "downscale_delay_s": 5,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 2,
}
CLIENTS = 16


def fast_autoscaling(config: dict) -> None:
    [encoder] = [d for d in config["applications"][0]["deployments"] if d["name"] == "Encoder"]
    assert encoder["autoscaling_config"]["min_replicas"] == 1
    encoder["autoscaling_config"].update(TEST_AUTOSCALING)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    workdir = tmp_path_factory.mktemp("autoscaling")
    with deployed_cluster(workdir, PORT, APP_OPTIONS, API_KEY, NODE_COUNTS, fast_autoscaling) as deployed:
        yield deployed


def running_encoders() -> int:
    return serve.status().applications["parakeet"].deployments["Encoder"].replica_states.get("RUNNING", 0)


class Load:
    """`clients` threads, each sending the clips one after another until stopped; every answer is kept."""

    def __init__(self, clips: list[bytes], clients: int) -> None:
        self.clips, self.stop = clips, threading.Event()
        self.answers: list[tuple[int, int, str]] = []  # (clip, status, text or error body)
        self.pool = ThreadPoolExecutor(clients)
        self.futures = [self.pool.submit(self.client, offset) for offset in range(clients)]

    def client(self, offset: int) -> None:
        index = offset
        while not self.stop.is_set():
            clip = index % len(self.clips)
            answer = requests.post(
                f"{URL}/v1/audio/transcriptions",
                files={"file": ("speech.flac", self.clips[clip])},
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=120,  # an unanswered request raises here, and from end()
            )
            self.answers.append((clip, answer.status_code, answer.json()["text"] if answer.ok else answer.text))
            index += 1

    def end(self) -> list[tuple[int, int, str]]:
        self.stop.set()
        for future in self.futures:
            future.result()
        self.pool.shutdown()
        return self.answers


def test_the_encoder_scales_out_to_a_gpu_node_each_and_back_losing_no_request(cluster: Deployed, unseen_speech):
    clips = unseen_speech[1][:4]
    expected = [transcript.text for transcript in load_model().transcribe(clips)]
    uploads = [flac_bytes(clip) for clip in clips]
    assert running_encoders() == 1

    heavy = Load(uploads, CLIENTS)
    try:
        wait_for(lambda: running_encoders() == GPU_NODES, "the Encoder to scale out", timeout_s=300)
        replicas = cluster.replicas("Encoder")
        gpu_nodes = {node.node_id for node in cluster.nodes["gpu_worker"]}
        assert len({replica.node_id for replica in replicas}) == GPU_NODES  # one replica a node
        assert {replica.node_id for replica in replicas} == gpu_nodes
    finally:
        answers = heavy.end()
    trickle = Load(uploads, 1)  # requests go on while the replicas drain
    try:
        wait_for(lambda: running_encoders() == 1, "the Encoder to scale back in", timeout_s=300)
    finally:
        answers += trickle.end()
    wait_for(lambda: len(cluster.replicas("Encoder")) == 1, "the drained replicas' actors to end", timeout_s=120)
    failures = [(status, body[:200]) for _, status, body in answers if status != 200]
    assert not failures, failures
    assert all(text == expected[clip] for clip, _, text in answers)
    assert len(answers) > CLIENTS

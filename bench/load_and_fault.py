"""What clients see while the Serve app scales and loses replicas: serve_config_cluster.yaml on a local cluster
(127.0.0.1) of one CPU node and three nodes that declare a GPU, under `--clients` concurrent clients.

    python bench/load_and_fault.py                     # 64 clients, the phases below, about 4 minutes on 2 cores
    python bench/load_and_fault.py --sdk               # the clients are OpenAI's SDK, retrying as it does
    python bench/load_and_fault.py --clients 32 --phase-seconds 20

Phases, in turn: scale-up (from one Encoder replica until three run), an Encoder replica killed, a Transcriber
(ingress) replica killed, steady load, then scale-down (the load drops to one client until one Encoder replica is
left). The autoscaling delays are short, as in tests/test_autoscaling.py. Each answer is counted in the phase it
arrived in; a request unanswered within --timeout counts as hung. Prints one markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` from a checkout, as the others

from recipe.synthesize import unseen_speech  # noqa: E402
from tests.serving import deployed_cluster, wait_for  # noqa: E402
from tests.test_autoscaling import APP_OPTIONS, NODE_COUNTS, fast_autoscaling  # noqa: E402
from tests.test_serve import flac_bytes  # noqa: E402

PORT = 8131
KILLS = (("an Encoder replica killed", "Encoder"), ("an ingress replica killed", "Transcriber"))
API_KEY = "load-and-fault-bench"


class Clients:
    """Client threads sending clips one after another; each answer is filed under the phase it arrived in (a
    request a kill fails arrives after the kill)."""

    def __init__(self, clips: list[bytes], timeout: float, sdk: bool) -> None:
        self.clips, self.timeout, self.sdk = clips, timeout, sdk
        self.phase = "start"
        self.outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.lock = threading.Lock()
        self.stops: list[threading.Event] = []
        self.pool = ThreadPoolExecutor(256)

    def add(self, count: int) -> threading.Event:
        """`count` more clients; setting the event returned stops them."""
        stop = threading.Event()
        self.stops.append(stop)
        for offset in range(count):
            self.pool.submit(self.client, offset, stop)
        return stop

    def client(self, offset: int, stop: threading.Event) -> None:
        send = self.sdk_request() if self.sdk else self.plain_request()
        index = offset
        while not stop.is_set():
            outcome = send(self.clips[index % len(self.clips)])
            with self.lock:
                self.outcomes[self.phase][outcome] += 1
            index += 1

    def plain_request(self) -> Callable[[bytes], str]:
        """One POST per request, no retry: what a client without retries sees."""
        session = requests.Session()

        def send(clip: bytes) -> str:
            try:
                answer = session.post(
                    f"http://127.0.0.1:{PORT}/v1/audio/transcriptions",
                    files={"file": ("speech.flac", clip)},
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    timeout=self.timeout,
                )
            except requests.Timeout:
                return "hung"
            except requests.ConnectionError as err:
                # Reset: the connection closed under a request (its replica died, or the proxy in front restarted);
                # refused: nothing listened.
                return "connection refused" if "refused" in str(err) else f"connection reset ({closed_how(err)})"
            if answer.ok:
                return "served"
            json_body = answer.headers.get("content-type", "").startswith("application/json")
            return f"failed {answer.status_code}" + ("" if json_body else " (not JSON)")

        return send

    def sdk_request(self) -> Callable[[bytes], str]:
        """OpenAI's client with its default retries (twice, on 408, 409, 429 and 5xx)."""
        import openai

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{PORT}/v1", api_key=API_KEY, timeout=self.timeout)

        def send(clip: bytes) -> str:
            try:
                client.audio.transcriptions.create(model="parakeet", file=("speech.flac", clip))
            except openai.APITimeoutError:
                return "hung"
            except openai.APIStatusError as err:
                return f"failed {err.status_code}"
            except openai.APIConnectionError:
                return "connection refused or reset"
            return "served"

        return send

    def stop_all(self) -> None:
        for stop in self.stops:
            stop.set()
        self.pool.shutdown()


def closed_how(err: requests.ConnectionError) -> str:
    """How the peer ended a connection under a request: closed before any answer (FIN), or reset (RST)."""
    text = str(err)
    if "RemoteDisconnected" in text or "without response" in text:
        return "closed without an answer"
    if "reset by peer" in text or "ConnectionResetError" in text:
        return "reset by the peer"
    if "BrokenPipe" in text or "Broken pipe" in text:
        return "broken pipe while sending"
    return text[:60]


def running(deployment: str) -> int:
    from ray import serve

    return serve.status().applications["parakeet"].deployments[deployment].replica_states.get("RUNNING", 0)


def kill_one(cluster, deployment: str) -> None:
    victim = cluster.replicas(deployment)[0]
    ray.kill(ray.get_actor(victim.name, namespace="serve"), no_restart=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--phase-seconds", type=float, default=15.0, help="length of each kill and steady phase")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds after which a request counts as hung")
    parser.add_argument("--sdk", action="store_true", help="clients are OpenAI's SDK, with its default retries")
    args = parser.parse_args()

    clips = [flac_bytes(clip) for clip in unseen_speech(8)[1]]
    with tempfile.TemporaryDirectory() as workdir:
        with deployed_cluster(Path(workdir), PORT, APP_OPTIONS, API_KEY, NODE_COUNTS, fast_autoscaling) as cluster:
            clients = Clients(clips, args.timeout, args.sdk)
            clients.phase = "scale-up (1 to 3 Encoder replicas)"
            heavy = clients.add(args.clients)
            started = time.monotonic()
            wait_for(lambda: running("Encoder") == 3, "the Encoder to scale out", timeout_s=600)
            scale_up_s = time.monotonic() - started
            for phase, deployment in KILLS:
                clients.phase = phase
                kill_one(cluster, deployment)
                time.sleep(args.phase_seconds)
            clients.phase = "steady"
            time.sleep(args.phase_seconds)
            clients.phase = "scale-down (to 1 Encoder replica, 1 client)"
            heavy.set()
            clients.add(1)
            started = time.monotonic()
            wait_for(lambda: running("Encoder") == 1, "the Encoder to scale in", timeout_s=600)
            scale_down_s = time.monotonic() - started
            clients.stop_all()

    kind = "OpenAI SDK clients (default retries)" if args.sdk else "plain HTTP clients (no retry)"
    print(f"\n{args.clients} {kind}; scale-up took {scale_up_s:.0f} s, scale-down {scale_down_s:.0f} s\n")
    print("| phase | served | failed (status) | hung |")
    print("|---|---|---|---|")
    for phase, outcomes in clients.outcomes.items():
        failures = sorted((name, count) for name, count in outcomes.items() if name not in ("served", "hung"))
        failed = ", ".join(f"{count} {name}" for name, count in failures)
        print(f"| {phase} | {outcomes['served']} | {failed or 0} | {outcomes['hung']} |")


if __name__ == "__main__":
    main()

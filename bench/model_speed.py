"""Our Parakeet-CTC against transformers' ParakeetForCTC on the same random weights in the parakeet-ctc-0.6b shape.

    python bench/model_speed.py                                  # CPU; 10 s and 60 s clips, batch 1 and 8
    python bench/model_speed.py --shapes 8x10 --repeats 3 --int8  # the headline shape, with the int8 path too
    python bench/model_speed.py --device cuda
    python bench/model_speed.py --profile --shapes 8x10 --threads 1   # where the time goes, by kind of op
    python bench/model_speed.py --shapes 8x10 --compile             # also ours with torch.compile'd conformer blocks

Each runner lives in its own worker process that holds its model; the parent hands them the same clips in turn,
`--repeats` interleaved rounds, and keeps each runner's fastest call. Timed, for every runner: waveforms -> text
(log-mel features, encoder, CTC head, greedy decoding, detokenisation) under `torch.inference_mode`, with the same
`torch.set_num_threads`. Memory: the worker's peak resident set during the call (weights, activations, libraries),
read after resetting the kernel's high-water mark through /proc/self/clear_refs; on CUDA, the peak allocated.
GFLOP/s: the encoder and CTC head's floating-point operations (counted once on the meta device with
`FlopCounterMode`; the FFT of the features is left out) per wall second, against a large `torch.mm` on the same
device and threads. Prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/model_speed.py` from a checkout, as the other benchmarks

from model import SAMPLE_RATE, load_audio  # noqa: E402
from model.stages import Buckets  # noqa: E402

RUNNERS = ("transformers", "ours", "ours int8", "ours compiled")


def clips(batch: int, seconds: float) -> list[np.ndarray]:
    """`batch` different clips of `seconds` each, tiled from the example recording: the same for every runner."""
    speech = load_audio(str(ROOT / "examples" / "speech.flac"))
    tiled = np.tile(speech, int(seconds * SAMPLE_RATE) // len(speech) + 2)
    return [tiled[row * 4000 :][: int(seconds * SAMPLE_RATE)].copy() for row in range(batch)]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


ONE_PASS = Buckets((1024,), (40_000,))  # every clip of a call in one batch and one window, as transformers runs them


def load_runner(name: str, checkpoint: str, device: torch.device):
    """-> a function from a list of waveforms to their texts."""
    if name == "transformers":
        from transformers import AutoProcessor, ParakeetForCTC

        processor = AutoProcessor.from_pretrained(checkpoint)
        model = ParakeetForCTC.from_pretrained(checkpoint).to(device).eval()

        def run(waveforms: list[np.ndarray]) -> list[str]:
            inputs = processor(waveforms, sampling_rate=SAMPLE_RATE, return_tensors="pt").to(device)
            ids = model.generate(inputs.input_features, attention_mask=inputs.attention_mask)
            return processor.batch_decode(ids, skip_special_tokens=True)

        return run
    from model import load_model

    model = load_model(checkpoint, device, quantize="int8" if name == "ours int8" else None, buckets=ONE_PASS)
    if name == "ours compiled":
        # Regional compilation: every block runs the same code on its own parameters, so one compiled graph (inductor,
        # fixed shapes) serves all of them and compiles in seconds where the whole network takes minutes.
        for block in model.network.encoder.layers:
            block.compile(dynamic=False)
    return lambda waveforms: [result.text for result in model.transcribe(waveforms)]


def worker(args: argparse.Namespace) -> None:
    """Load one runner, then time one call per request line ({"batch", "seconds"}) and answer with a JSON line."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    run = load_runner(args.worker, args.checkpoint, device)
    # Loading frees what it read (and int8 quantisation the float32 weights); glibc keeps freed heap resident until
    # trimmed, so trim it: the peak then measures what the runner holds, not how it was loaded.
    ctypes.CDLL(None).malloc_trim(0)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        waveforms = clips(request["batch"], request["seconds"])
        reset_peak_memory(device)
        with torch.inference_mode():
            started = time.perf_counter()
            texts = run(waveforms)
            synchronize(device)
            wall = time.perf_counter() - started
        print(json.dumps({"wall": wall, "peak_mb": peak_memory_mb(device), "chars": sum(map(len, texts))}), flush=True)


class Worker:
    def __init__(self, name: str, checkpoint: Path, args: argparse.Namespace) -> None:
        command = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--checkpoint",
            str(checkpoint),
            "--device",
            args.device,
            "--threads",
            str(args.threads),
        ]
        self.name = name
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._answer()

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name!r} died (exit code {self.process.wait()})")
        return json.loads(line)

    def time(self, batch: int, seconds: float) -> dict:
        self.process.stdin.write(json.dumps({"batch": batch, "seconds": seconds}) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def encoder_flops(checkpoint: Path, batch: int, seconds: float) -> int:
    """Floating-point operations of our network (encoder + CTC head) on `batch` clips of `seconds`."""
    from torch.utils.flop_counter import FlopCounterMode

    from model.checkpoint import read_configs
    from model.heads import ParakeetCTC

    config, features = read_configs(checkpoint)
    frames = 1 + int(seconds * SAMPLE_RATE) // features.hop_length
    with torch.device("meta"):
        network = ParakeetCTC(config).eval()
        inputs = torch.empty(batch, frames, config.encoder_config.num_mel_bins), torch.full((batch,), frames - 1)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(*inputs)
    return counter.get_total_flops()


def matmul_peak_gflops(device: torch.device, size: int = 4096, repeats: int = 5) -> float:
    """The best fp32 GFLOP/s of a (size x size) @ (size x size) torch.mm."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def category(name: str) -> str:
    """Coarse kind of a profiled aten op, for the --profile table."""
    if name in ("aten::addmm", "aten::mm", "aten::bmm", "aten::_slow_conv2d_forward"):
        return "matmuls (linear layers, point-wise convs, position scores)"
    if "scaled_dot_product" in name:
        return "attention kernel (SDPA)"
    if "convolution" in name or name == "aten::im2col":
        return "convolutions (subsampling, depth-wise)"
    if name in ("aten::copy_", "aten::cat", "aten::fill_", "aten::clone"):
        return "copies"
    return "element-wise (norms, activations, masks, adds, features)"


def profile(args: argparse.Namespace, checkpoint: Path, batch: int, seconds: float) -> None:
    """Self CPU seconds per kind of op of one call of each runner, in this process."""
    from torch.profiler import profile as profiler

    device = torch.device(args.device)
    totals: dict[str, dict[str, float]] = {}
    for name in ("transformers", "ours"):
        run = load_runner(name, str(checkpoint), device)
        waveforms = clips(batch, seconds)
        with torch.inference_mode():
            run(waveforms)
            with profiler() as trace:
                run(waveforms)
        totals[name] = {}
        for event in trace.key_averages():
            kind = category(event.key)
            totals[name][kind] = totals[name].get(kind, 0.0) + event.self_cpu_time_total / 1e6
        del run
    print(
        f"| self CPU s, {batch} × {seconds:g} s, {args.layers} layers, {args.threads} threads | transformers | ours |"
    )
    print("|---|---|---|")
    for kind in sorted(totals["transformers"], key=lambda kind: -totals["transformers"][kind]):
        print(f"| {kind} | {totals['transformers'][kind]:.2f} | {totals['ours'].get(kind, 0.0):.2f} |")
    print(f"| total | {sum(totals['transformers'].values()):.2f} | {sum(totals['ours'].values()):.2f} |")


def build_checkpoint(directory: Path, layers: int) -> None:
    """Random transformers weights in the 0.6b shape, saved with processor and tokenizer, as the parity tests do."""
    from tests.reference import REAL_ENCODER, make_reference_checkpoint

    make_reference_checkpoint(directory, REAL_ENCODER, vocab_size=1025, num_hidden_layers=layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--shapes", nargs="+", default=["1x10", "8x10", "1x60", "8x60"], help="BATCHxSECONDS clip sets to time"
    )
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; each runner's best call counts")
    parser.add_argument("--int8", action="store_true", help="also time ours with int8 dynamic quantisation (CPU)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time ours with each conformer block torch.compile'd (the first call compiles)",
    )
    parser.add_argument("--layers", type=int, default=24, help="fewer for a quick look; 24 is the 0.6b shape")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing, profile one call of each runner on the first shape, by kind of op",
    )
    parser.add_argument("--worker", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    shapes = [tuple(map(float, shape.split("x"))) for shape in args.shapes]
    optional = {"ours int8": args.int8, "ours compiled": args.compile}
    names = [name for name in RUNNERS if optional.get(name, True)]
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(
        f"load average {os.getloadavg()}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} threads, torch {torch.__version__}, device {args.device}",
        file=sys.stderr,
    )
    peak = matmul_peak_gflops(device)
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = Path(scratch)
        build_checkpoint(checkpoint, args.layers)
        if args.profile:
            return profile(args, checkpoint, int(shapes[0][0]), shapes[0][1])
        flops = {shape: encoder_flops(checkpoint, int(shape[0]), shape[1]) for shape in shapes}
        workers = [Worker(name, checkpoint, args) for name in names]
        wall: dict[tuple, float] = {}
        memory: dict[tuple, float] = {}
        for round_ in range(args.repeats):
            for shape in shapes:
                for runner in workers if round_ % 2 == 0 else workers[::-1]:  # neither always goes first
                    result = runner.time(int(shape[0]), shape[1])
                    key = (shape, runner.name)
                    wall[key] = min(wall.get(key, float("inf")), result["wall"])
                    memory[key] = max(memory.get(key, 0.0), result["peak_mb"])
                    print(f"round {round_ + 1} {runner.name} {shape}: {result}", file=sys.stderr)
        for runner in workers:
            runner.close()
    print(f"fp32 torch.mm peak {peak:.0f} GFLOP/s; load average at the end {os.getloadavg()}\n")
    print("| clips | runner | best wall s | RTFx | × transformers | GFLOP/s | % of mm peak | peak memory MB |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        batch, seconds = int(shape[0]), shape[1]
        for name in names:
            seconds_taken = wall[(shape, name)]
            gflops = flops[shape] / seconds_taken / 1e9
            print(
                f"| {batch} × {seconds:g} s | {name} | {seconds_taken:.2f} | {batch * seconds / seconds_taken:.1f} | "
                f"{wall[(shape, 'transformers')] / seconds_taken:.2f} | {gflops:.0f} | {100 * gflops / peak:.0f}% | "
                f"{memory[(shape, name)]:.0f} |"
            )


if __name__ == "__main__":
    main()

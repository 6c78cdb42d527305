"""The checks a session lent a GPU runs first: one command, within 8 minutes on one H200, figures for BENCHMARKS.md.

    python bench/gpu_check.py --out DIR                  # on the GPU machine: the parakeet-ctc-0.6b shape
    python bench/gpu_check.py --device cpu --layers 2 --batches 1 2 --buckets 1 2 --out /tmp/gpu_check  # smoke run

The GPU machine has torch and transformers but neither soundfile nor soxr, which `model` imports: carry them as
wheels (the device tool's notes). Once, here, in the repository root:

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl soundfile soxr cffi pycparser

then run, carrying `.whl`:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. &&
    PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out $OUT

On random weights in the 0.6b shape (saved by transformers, loaded by both), with clips tiled from the example
recording, it measures, each part within what is left of --budget seconds (a part that would not fit is skipped
and says so; the warm-ups leave SPEED_SECONDS of it to the RTFx part):
1. bf16 against fp32: the share of frames whose best id agrees, and of clips whose text agrees (Encoder stage, eager);
2. every bucket's warm-up (compilation and CUDA-graph recording) of the Encoder stage as the Serve app runs it;
3. encoder RTFx (feature windows -> best ids) at each --batches size of 10 s windows: the Encoder stage compiled
   (as served), eager in bf16, and transformers' ParakeetForCTC eager and torch.compile'd, in bf16;
4. featurization on the GPU against the CPU (LogMelFeatures on a batch of 10 s clips), audio seconds per second;
5. peak GPU memory of each runner.
Prints markdown tables and writes them, with the raw figures, to DIR/gpu_check.json and DIR/gpu_check.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/gpu_check.py` from a checkout, as the other benchmarks

from bench.model_speed import build_checkpoint, clips  # noqa: E402
from model import SAMPLE_RATE  # noqa: E402
from model.checkpoint import read_configs, read_network  # noqa: E402
from model.config import FeatureConfig  # noqa: E402
from model.features import LogMelFeatures, pad_waveforms  # noqa: E402
from model.stages import Buckets, Encoder, default_dtype  # noqa: E402

WINDOW_SECONDS = 10.0
SPEED_SECONDS = 200.0  # of the budget kept for the runners' RTFx (transformers compiles for each batch size)
# Feature frames of one window: the bench's checkpoint has the released models' front end.
FRAMES = int(WINDOW_SECONDS * SAMPLE_RATE) // FeatureConfig().hop_length


class Report:
    """Figures as they come, printed at once and kept for the files; a budget in seconds shared by the parts."""

    def __init__(self, budget: float) -> None:
        self.deadline = time.monotonic() + budget
        self.figures: dict[str, object] = {}
        self.lines: list[str] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(self.figures, indent=2) + "\n")
        (out / "gpu_check.md").write_text("\n".join(self.lines) + "\n")


def timed(run: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """The fastest of `repeats` calls, in seconds, after one untimed call."""
    run()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def feature_windows(feature_extractor: LogMelFeatures, count: int) -> list[np.ndarray]:
    waveforms = clips(count, WINDOW_SECONDS)
    features, lengths = feature_extractor(*pad_waveforms(waveforms))
    return [row[:length].numpy() for row, length in zip(features, lengths.tolist())]


def agreement(checkpoint: Path, windows: list[np.ndarray], device: torch.device, report: Report) -> None:
    config, _ = read_configs(checkpoint)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        encoder = Encoder(read_network(checkpoint, config), Buckets((8,), (FRAMES,)), device.type, dtype)
        results[dtype] = encoder(windows)
        del encoder
    frames = sum(len(ids) for ids in results[torch.float32])
    same = sum(int((a == b).sum()) for a, b in zip(results[torch.float32], results[torch.bfloat16]))
    clips_same = sum(np.array_equal(a, b) for a, b in zip(results[torch.float32], results[torch.bfloat16]))
    report.figures["bf16_vs_fp32"] = {"frames_agreeing": same / frames, "clips_identical": clips_same / len(windows)}
    report.say(f"\n| bf16 against fp32, {len(windows)} windows of {WINDOW_SECONDS:g} s | share |\n|---|---|")
    report.say(f"| frames whose best id agrees | {same / frames:.2%} |")
    report.say(f"| windows whose ids agree at every frame | {clips_same / len(windows):.0%} |")


def warm_up(checkpoint: Path, buckets: Buckets, device: torch.device, report: Report) -> Encoder:
    config, _ = read_configs(checkpoint)
    dtype = default_dtype(device.type)
    encoder = Encoder(read_network(checkpoint, config), buckets, device.type, dtype, compile=True)
    report.say("\n| bucket (batch × frames) | warm-up s |\n|---|---|")
    seconds: dict[str, float] = {}
    for batch, frames in buckets.shapes():
        # Keep the runners' share of the budget, counting the next bucket as long as the slowest so far.
        if report.left() - max(seconds.values(), default=0.0) < SPEED_SECONDS:
            report.say(f"| {batch} × {frames} | skipped: {report.left():.0f} s of the budget left |")
            continue
        started = time.perf_counter()
        for _ in range(2 if device.type == "cuda" else 1):  # CUDA graphs record on the second call
            encoder._run(np.zeros((batch, frames, encoder.mels), np.float32), np.full(batch, frames))
        seconds[f"{batch}x{frames}"] = time.perf_counter() - started
        report.say(f"| {batch} × {frames} | {seconds[f'{batch}x{frames}']:.1f} |")
    report.figures["warm_up_seconds"] = seconds
    return encoder


def transformers_runner(checkpoint: Path, device: torch.device, compiled: bool) -> Callable[[np.ndarray], None]:
    from transformers import ParakeetForCTC

    dtype = default_dtype(device.type)
    model = ParakeetForCTC.from_pretrained(checkpoint, dtype=dtype).to(device).eval()
    forward = torch.compile(model) if compiled else model

    @torch.inference_mode()
    def run(features: np.ndarray) -> None:
        inputs = torch.from_numpy(features).to(device, dtype)
        mask = torch.ones(inputs.shape[:2], dtype=torch.long, device=device)
        forward(input_features=inputs, attention_mask=mask).logits.argmax(-1).cpu()

    return run


def encoder_speed(
    checkpoint: Path,
    served: Encoder,
    windows: list[np.ndarray],
    batches: list[int],
    device: torch.device,
    report: Report,
) -> None:
    config, _ = read_configs(checkpoint)
    dtype = default_dtype(device.type)
    eager = Encoder(read_network(checkpoint, config), Buckets((max(batches),), (FRAMES,)), device.type, dtype)
    runners: dict[str, Callable[[list[np.ndarray]], object]] = {
        "ours, compiled as served": served,
        "ours, eager": eager,
    }
    for name, compiled in (("transformers, eager", False), ("transformers, torch.compile", True)):
        run = transformers_runner(checkpoint, device, compiled)
        runners[name] = lambda batch, run=run: run(np.stack(batch))
    report.say("\n| runner | " + " | ".join(f"batch {b}: RTFx, peak GiB" for b in batches) + " |")
    report.say("|---|" + "---|" * len(batches))
    figures: dict[str, dict[str, list[float]]] = {}
    for name, run in runners.items():
        cells, figures[name] = [], {}
        for batch in batches:
            if report.left() < 30:
                cells.append("skipped (budget)")
                continue
            reset_peak(device)
            group = (windows * (batch // len(windows) + 1))[:batch]
            seconds = timed(lambda group=group, run=run: run(group), device)
            figures[name][str(batch)] = [batch * WINDOW_SECONDS / seconds, peak_gib(device)]
            cells.append(f"{batch * WINDOW_SECONDS / seconds:,.0f}, {peak_gib(device):.1f}")
        report.say(f"| {name} | " + " | ".join(cells) + " |")
    report.figures["encoder_rtfx_and_peak_gib"] = figures


def featurization(checkpoint: Path, device: torch.device, report: Report) -> None:
    _, feature_config = read_configs(checkpoint)
    waveforms, lengths = pad_waveforms(clips(64, WINDOW_SECONDS))
    report.say(f"\n| log-mel of 64 × {WINDOW_SECONDS:g} s | audio s per s |\n|---|---|")
    figures = {}
    for where in ("cpu", device.type) if device.type != "cpu" else ("cpu",):
        extractor = LogMelFeatures(feature_config).to(where)
        batch, batch_lengths = waveforms.to(where), lengths.to(where)
        seconds = timed(
            lambda extractor=extractor, batch=batch, lengths=batch_lengths: extractor(batch, lengths),
            torch.device(where),
        )
        figures[where] = 64 * WINDOW_SECONDS / seconds
        report.say(f"| {where} | {figures[where]:,.0f} |")
    report.figures["featurization_audio_seconds_per_second"] = figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=24, help="24: the 0.6b shape; fewer for a smoke run")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 128])
    parser.add_argument(
        "--buckets",
        type=int,
        nargs="+",
        default=[1, 16, 64, 128],
        help="batch sizes of the served buckets warmed up (frames: 1000 and 3000)",
    )
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all parts")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = Report(args.budget)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report.say(f"# gpu_check: {name}, torch {torch.__version__}, {args.layers} layers")
    report.figures["device"] = name
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = Path(scratch)
        build_checkpoint(checkpoint, args.layers)
        windows = feature_windows(LogMelFeatures(read_configs(checkpoint)[1]), 8)
        try:
            agreement(checkpoint, windows, device, report)
            featurization(checkpoint, device, report)
            served = warm_up(checkpoint, Buckets(tuple(args.buckets), (FRAMES, 3 * FRAMES)), device, report)
            encoder_speed(checkpoint, served, windows, args.batches, device, report)
        finally:
            report.say(f"\n{args.budget - report.left():.0f} s of the {args.budget:.0f} s budget used")
            report.write(args.out)


if __name__ == "__main__":
    main()

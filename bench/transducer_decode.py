"""Cost of the transducer's greedy decoding loop against the encoder, in the parakeet-tdt-0.6b-v2 shape, on CPU.

    python bench/transducer_decode.py                # 10 s of audio, batches of 1 and 8
    python bench/transducer_decode.py --seconds 30 --vocab-size 8193

The weights are random, so the joint is pinned to the two extremes of a real decode: every step a blank (one step
per frame, the prediction network never runs) or every frame a token (one step per frame, the LSTM runs at each).
Trained models emit 3-5 tokens a second against 12.5 frames, so their cost lies between the two. The encoder runs
on all threads, the decoding on one, as in the Serve app's deployments. Prints one markdown table (for
BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from model.config import EncoderConfig, TDTConfig
from model.decoding import greedy_transducer
from model.heads import ParakeetTransducer

FRAMES_PER_SECOND = 100  # 10 ms feature frames


def pin_joint(network: ParakeetTransducer, token: int) -> None:
    """Make the joint always choose `token` with a duration of one frame."""
    head, vocab = network.joint.head, network.config.vocab_size
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token] = 1.0
        head.bias[vocab + network.config.durations.index(1)] = 1.0


def timed(function, repeats: int = 3) -> float:
    """Best wall seconds of `repeats` calls (the machine is shared: the best is the least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--vocab-size", type=int, default=1025)
    args = parser.parse_args()
    encoder = EncoderConfig(num_mel_bins=128)
    config = TDTConfig(vocab_size=args.vocab_size, blank_token_id=args.vocab_size - 1, encoder_config=encoder)
    network = ParakeetTransducer(config).eval()
    frames = int(args.seconds * FRAMES_PER_SECOND)
    threads = torch.get_num_threads()
    print(
        f"{platform.machine()}, torch {torch.__version__}, encoder on {threads} threads, decoding on 1, "
        f"{args.seconds:.0f} s per utterance, vocab {args.vocab_size}\n"
    )
    print("| batch | encoder s | decode s, all blank | decode s, a token every frame | decode / encoder |")
    print("|---|---|---|---|---|")
    for batch in (1, 8):
        features, lengths = torch.randn(batch, frames, encoder.num_mel_bins), torch.full((batch,), frames)
        torch.set_num_threads(threads)
        with torch.inference_mode():
            encoder_seconds = timed(lambda: network(features, lengths), repeats=2)  # noqa: B023, timed at once
            encoded, encoded_lengths = network(features, lengths)
        torch.set_num_threads(1)
        decode_seconds = []
        for token in (config.blank_id, 5):
            pin_joint(network, token)
            decode_seconds.append(timed(lambda: greedy_transducer(network, encoded, encoded_lengths)))  # noqa: B023
        print(
            f"| {batch} | {encoder_seconds:.2f} | {decode_seconds[0]:.3f} | {decode_seconds[1]:.3f} | "
            f"{decode_seconds[0] / encoder_seconds:.1%} - {decode_seconds[1] / encoder_seconds:.1%} |"
        )


if __name__ == "__main__":
    main()

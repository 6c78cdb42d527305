"""Word and character error rates of a checkpoint on a parquet corpus.

python -m recipe.evaluate data/corpus/test.parquet data/corpus/holdout_voice.parquet [--model DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from model import SAMPLE_RATE, load_model
from model.stages import Buckets
from recipe.corpus import read_parquet_audio
from recipe.metrics import char_error_rate, word_error_rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipe.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("corpora", nargs="+", type=Path, help="parquet files with audio and text columns")
    parser.add_argument("--model", default=None, help="checkpoint directory (default: embedded model)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows encoded together")
    parser.add_argument("--int8", action="store_true", help="int8 dynamic quantisation of the linear layers")
    args = parser.parse_args(argv)
    model = load_model(args.model, quantize="int8" if args.int8 else None, buckets=Buckets((args.batch_size,)))
    for path in args.corpora:
        waveforms, texts = read_parquet_audio(path)
        started = time.time()
        hypotheses = [t.text for t in model.transcribe(waveforms)]
        seconds = sum(len(w) for w in waveforms) / SAMPLE_RATE
        print(
            f"{path}: {len(texts)} utterances, WER {word_error_rate(texts, hypotheses):.2%}, "
            f"CER {char_error_rate(texts, hypotheses):.2%}, RTFx {seconds / (time.time() - started):.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

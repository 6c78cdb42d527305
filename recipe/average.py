"""Checkpoint averaging: one model whose weights are the element-wise mean of several models' weights.

    python -m recipe.average --out runs/averaged runs/tuned6/model runs/tuned7/model runs/tuned8/model

The models must share architecture (config.json), features (preprocessor_config.json) and tokenizer; averaging the
checkpoints of one training trajectory (successive fine-tunes, or a run's `--keep-evaluations` models) usually
scores a little better than any one of them. Batch-norm running statistics are averaged like the weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from model import load_model
from model.api import Parakeet


def average_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of each floating-point tensor over `states` (computed in float64, kept in its dtype); other tensors
    (counters such as batch norm's num_batches_tracked) are taken from the first state."""
    if not states:
        raise ValueError("nothing to average: no state dicts")
    averaged = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            total = sum(state[name].to(torch.float64) for state in states)
            averaged[name] = (total / len(states)).to(first.dtype)
        else:
            averaged[name] = first.clone()
    return averaged


def pieces(model: Parakeet) -> list[str]:
    return [model.tokenizer.piece(token_id) for token_id in range(model.tokenizer.vocab_size)]


def check_compatible(models: list[tuple[str, Parakeet]]) -> None:
    """Raise ValueError naming the first model whose architecture, features or tokenizer differ from the first's."""
    (first_name, first), *others = models
    for name, model in others:
        for what, mine, theirs in (
            ("config.json", model.config.to_dict(), first.config.to_dict()),
            ("preprocessor_config.json", model.feature_config.to_dict(), first.feature_config.to_dict()),
            ("tokenizer pieces", pieces(model), pieces(first)),
        ):
            if mine != theirs:
                raise ValueError(f"cannot average {name} with {first_name}: their {what} differ")


def average_models(directories: list[Path]) -> Parakeet:
    """The first model with the mean weights of all of them (a directory given twice counts twice)."""
    models = [(str(directory), load_model(directory)) for directory in directories]
    check_compatible(models)
    averaged = models[0][1]
    averaged.network.load_state_dict(average_state([model.network.state_dict() for _, model in models]))
    return averaged


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipe.average", description=__doc__.split("\n")[0])
    parser.add_argument(
        "models", nargs="+", type=Path, metavar="MODEL_DIR", help="checkpoint directories (at least two)"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the averaged model")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("give at least two model directories to average")
    try:
        averaged = average_models(args.models)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    averaged.save_pretrained(args.out)
    print(f"averaged {len(args.models)} models into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

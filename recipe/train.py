"""Training recipe: a small FastConformer-CTC on a synthesised parquet corpus, on CPU.

    python -m recipe.train --data data/corpus --out runs/default          # 7 epochs: about 75 min on 2 cores
    python -m recipe.train --data data/corpus --out runs/default --resume # continue from runs/default/last.pt
    python -m recipe.train --data data/corpus2 --out runs/tuned --init model/default --lr 5e-4  # fine-tune a model

Writes runs/NAME/last.pt (resumable state) and runs/NAME/model/ (best dev WER, Hugging Face layout). With several
--dev splits (say `--dev dev dev_passages`), the best model is the one with the lowest mean of their WERs. With
--keep-evaluations, every evaluation's model is kept too, as runs/NAME/step-STEP/, for `python -m recipe.average`.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.parquet as pq
import torch

from model import CTCConfig, EncoderConfig, FeatureConfig, Parakeet, ParakeetCTC, checkpoint
from model.config import ModelConfig, blank_id_for
from model.decoding import greedy_ctc
from model.features import LogMelFeatures
from model.tokenizer import Tokenizer
from recipe.corpus import read_parquet_audio
from recipe.metrics import char_error_rate, word_error_rate
from recipe.vocabulary import train_tokenizer

DEFAULT_VOCAB_SIZE = 257  # 256 pieces and the blank


@dataclass
class Split:
    features: list[torch.Tensor]  # (frames, mels), float16 to halve the memory
    texts: list[str]
    targets: list[list[int]]


def featurize(path: Path, extractor: LogMelFeatures, tokenizer: Tokenizer) -> Split:
    waveforms, texts = read_parquet_audio(path)
    features = []
    for waveform in waveforms:
        features.append(extractor.one(torch.from_numpy(waveform)).to(torch.float16))
    return Split(features, texts, [tokenizer.encode(text) for text in texts])


def length_batches(lengths: list[int], max_frames: int, rng: random.Random) -> list[list[int]]:
    """Group similar lengths (little padding) into batches of at most `max_frames` padded frames, shuffled."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches, current = [], []
    for index in order:
        if current and (len(current) + 1) * lengths[index] > max_frames:
            batches.append(current)
            current = []
        current.append(index)
    batches.append(current)
    rng.shuffle(batches)
    return batches


def collate(split: Split, indices: list[int], blank_id: int) -> tuple[torch.Tensor, ...]:
    feats = [split.features[i].float() for i in indices]
    lengths = torch.tensor([len(f) for f in feats])
    batch = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    targets = [torch.tensor(split.targets[i]) for i in indices]
    target_lengths = torch.tensor([len(t) for t in targets])
    padded_targets = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True, padding_value=blank_id)
    return batch, lengths, padded_targets, target_lengths


def spec_augment(features: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Two frequency masks (<= 15 bins) and time masks (<= 5% of the utterance each) per utterance."""
    features = features.clone()
    mels = features.shape[2]
    for row, length in enumerate(lengths.tolist()):
        for _ in range(2):
            width = int(torch.randint(0, 16, (), generator=generator))
            start = int(torch.randint(0, mels - width + 1, (), generator=generator))
            features[row, :, start : start + width] = 0
        max_width = max(1, length // 20)
        for _ in range(2):
            width = int(torch.randint(0, max_width + 1, (), generator=generator))
            start = int(torch.randint(0, max(1, length - width), (), generator=generator))
            features[row, start : start + width] = 0
    return features


def autocast(device: torch.device) -> torch.autocast:
    """bfloat16 matmuls on a GPU (the CTC loss itself stays float32); plain float32 on CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def learning_rate(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.inference_mode()
def evaluate(network: ParakeetCTC, split: Split, tokenizer: Tokenizer, max_frames: int) -> tuple[float, float]:
    network.eval()
    device = next(network.parameters()).device
    hypotheses: dict[int, str] = {}
    for indices in length_batches([len(f) for f in split.features], max_frames, random.Random(0)):
        features, lengths, _, _ = collate(split, indices, network.config.blank_id)
        with autocast(device):
            logits, logit_lengths = network(features.to(device), lengths.to(device))
        for index, spans in zip(indices, greedy_ctc(logits, logit_lengths, network.config.blank_id)):
            hypotheses[index] = tokenizer.decode([s.token_id for s in spans])
    network.train()
    ordered = [hypotheses[i] for i in range(len(split.texts))]
    return word_error_rate(split.texts, ordered), char_error_rate(split.texts, ordered)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipe.train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="directory with train.parquet and dev.parquet")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument(
        "--init",
        type=Path,
        metavar="MODEL_DIR",
        help="start from this CTC model's weights and tokenizer (fine-tuning: fresh optimiser and "
        "schedule; the architecture options are then taken from its config.json)",
    )
    parser.add_argument(
        "--dev",
        nargs="+",
        default=["dev"],
        metavar="SPLIT",
        help="DATA/SPLIT.parquet files scored at each evaluation (default: dev)",
    )
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--max-frames", type=int, default=5000, help="padded feature frames per batch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument(
        "--keep-evaluations",
        action="store_true",
        help="also save the model of every evaluation, as OUT/step-STEP/ (for python -m recipe.average)",
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="tokenizer size including the blank (default 257; with --init, a size other than the "
        "model's trains a new tokenizer and a new CTC head on the model's encoder)",
    )
    parser.add_argument("--hidden", type=int, default=144)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--subsampling-channels", type=int, default=32)
    parser.add_argument("--dropout", type=float, default=0.1, help="dropout in the conformer blocks")
    parser.add_argument(
        "--spec-augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="mask frequency bands and time spans of the training features",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda trains in bfloat16 autocast; raise --max-frames to fill the GPU",
    )
    return parser


def initial_config(args: argparse.Namespace, init_config: ModelConfig | None) -> CTCConfig:
    """The architecture from the options, or from the --init model's config with the recipe's dropout (and the
    --vocab-size, if one is given)."""
    if init_config is None:
        vocab_size = args.vocab_size or DEFAULT_VOCAB_SIZE
        return CTCConfig(
            vocab_size=vocab_size,
            pad_token_id=blank_id_for(vocab_size),
            encoder_config=EncoderConfig(
                hidden_size=args.hidden,
                num_hidden_layers=args.layers,
                num_attention_heads=args.heads,
                intermediate_size=4 * args.hidden,
                subsampling_conv_channels=args.subsampling_channels,
                layerdrop=0.0,
                dropout=args.dropout,
                activation_dropout=args.dropout,
                attention_dropout=args.dropout,
            ),
        )
    if not isinstance(init_config, CTCConfig):
        sys.exit(f"--init: {args.init} holds a {type(init_config).__name__} model; the recipe trains CTC models")
    encoder = replace(
        init_config.encoder_config,
        dropout=args.dropout,
        activation_dropout=args.dropout,
        attention_dropout=args.dropout,
    )
    vocab_size = args.vocab_size or init_config.vocab_size
    return replace(init_config, encoder_config=encoder, vocab_size=vocab_size, pad_token_id=blank_id_for(vocab_size))


def retokenized_network(init: Path, old_config: CTCConfig, config: CTCConfig, tokenizer: Tokenizer) -> ParakeetCTC:
    """The --init model's encoder under a CTC head for a new tokenizer. Each new piece's row of the head starts as
    the old head's row for the first old piece of the new piece's text (the blank's as the old blank's), so the
    network begins by emitting the new pieces where it emitted their beginnings, rather than from nothing."""
    old_tokenizer = Tokenizer.from_file(init / checkpoint.TOKENIZER_FILE, blank_id=old_config.blank_id)
    rows = [
        old_config.blank_id if new_id == config.blank_id else old_tokenizer.first_piece(tokenizer.piece(new_id))
        for new_id in range(config.vocab_size)
    ]
    state = checkpoint.read_state_dict(init, ("encoder.",))
    old_head = checkpoint.read_state_dict(init, ("ctc_head.",))
    state.update({name: tensor[rows] for name, tensor in old_head.items()})
    network = ParakeetCTC(config)
    checkpoint.check_and_load(network, state, str(init))
    return network


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.vocab_size is not None and args.vocab_size < 2:
        parser.error(f"--vocab-size {args.vocab_size}: a tokenizer needs at least one piece besides the blank")
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    state_path = args.out / "last.pt"
    if args.resume and not state_path.is_file():
        sys.exit(f"--resume: {state_path} does not exist")

    init_config = checkpoint.read_configs(args.init)[0] if args.init else None
    config = initial_config(args, init_config)
    retokenize = init_config is not None and config.vocab_size != init_config.vocab_size
    tokenizer_path = args.out / "tokenizer.json"
    if args.init and not retokenize and not tokenizer_path.is_file():
        shutil.copyfile(args.init / checkpoint.TOKENIZER_FILE, tokenizer_path)
    elif not tokenizer_path.is_file():
        texts = pq.read_table(args.data / "train.parquet", columns=["text"]).column("text").to_pylist()
        train_tokenizer(texts, config.vocab_size).save(str(tokenizer_path))
    tokenizer = Tokenizer.from_file(tokenizer_path, blank_id=config.blank_id)
    if tokenizer.vocab_size != config.vocab_size:
        sys.exit(
            f"{tokenizer_path} has {tokenizer.vocab_size} ids but the model {config.vocab_size}: resume with the "
            f"run's own --vocab-size"
        )
    feature_config = FeatureConfig()
    extractor = LogMelFeatures(feature_config)
    started = time.time()
    train = featurize(args.data / "train.parquet", extractor, tokenizer)
    dev = {name: featurize(args.data / f"{name}.parquet", extractor, tokenizer) for name in args.dev}
    print(
        f"featurised {len(train.texts)} train / {sum(len(split.texts) for split in dev.values())} dev utterances "
        f"in {time.time() - started:.0f} s",
        file=sys.stderr,
    )

    device = torch.device(args.device)
    if retokenize:
        network = retokenized_network(args.init, init_config, config, tokenizer)
    else:
        network = checkpoint.read_network(args.init, config) if args.init else ParakeetCTC(config)
    network = network.to(device).train()
    print(f"{sum(p.numel() for p in network.parameters()) / 1e6:.2f} M parameters", file=sys.stderr)
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-3, betas=(0.9, 0.98))
    rng, generator = random.Random(args.seed), torch.Generator().manual_seed(args.seed)
    lengths = [len(f) for f in train.features]
    steps_per_epoch = len(length_batches(lengths, args.max_frames, random.Random(0)))
    total_steps = args.epochs * steps_per_epoch
    step, best_wer = 0, float("inf")
    if args.resume:
        state = torch.load(state_path, weights_only=False, map_location=device)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        step, best_wer = state["step"], state["best_wer"]
        rng.setstate(state["rng"])
        generator.set_state(state["generator"].cpu())

    smoothed, started = None, time.time()
    start_step = step
    while step < total_steps:
        for indices in length_batches(lengths, args.max_frames, rng):
            if step >= total_steps:
                break
            features, feature_lengths, targets, target_lengths = collate(train, indices, config.blank_id)
            if args.spec_augment:
                features = spec_augment(features, feature_lengths, generator)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, args.lr, args.warmup, total_steps)
            with autocast(device):
                loss = network.loss(
                    *(tensor.to(device) for tensor in (features, feature_lengths, targets, target_lengths))
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            step += 1
            value = float(loss.detach())
            smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
            elapsed = time.time() - started
            eta = elapsed / (step - start_step) * (total_steps - step)
            print(
                f"\rstep {step}/{total_steps} epoch {step / steps_per_epoch:.2f} loss {smoothed:.3f} "
                f"lr {optimizer.param_groups[0]['lr']:.2e} elapsed {elapsed / 60:.1f} min eta {eta / 60:.1f} min",
                end="",
                file=sys.stderr,
                flush=True,
            )
            if step % args.eval_every == 0 or step == total_steps:
                scores = {name: evaluate(network, split, tokenizer, args.max_frames) for name, split in dev.items()}
                wer = sum(split_wer for split_wer, _ in scores.values()) / len(scores)
                saves = ([args.out / "model"] if wer < best_wer else []) + (
                    [args.out / f"step-{step}"] if args.keep_evaluations else []
                )
                best_wer = min(best_wer, wer)
                for directory in saves:
                    Parakeet(config, feature_config, network, tokenizer).save_pretrained(directory)
                network.train()
                report = ", ".join(f"{name} WER {w:.2%} CER {c:.2%}" for name, (w, c) in scores.items())
                print(f"\nstep {step}: {report} (best {best_wer:.2%})", file=sys.stderr)
                torch.save(
                    {
                        "network": network.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "step": step,
                        "best_wer": best_wer,
                        "rng": rng.getstate(),
                        "generator": generator.get_state(),
                    },
                    state_path,
                )
    print(f"\ndone: best dev WER {best_wer:.2%}; model in {args.out / 'model'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

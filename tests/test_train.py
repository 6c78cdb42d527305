"""The training recipe end to end on a tiny corpus: a run, a resumed run, the checkpoints it writes, their average."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model import load_model
from recipe import average, train
from recipe.sentences import sentence_pool
from recipe.synthesize import Voice, write_corpus

pytestmark = pytest.mark.slow
TINY = [
    "--hidden",
    "32",
    "--layers",
    "1",
    "--heads",
    "2",
    "--subsampling-channels",
    "8",
    "--vocab-size",
    "65",
    "--max-frames",
    "1200",
    "--eval-every",
    "3",
    "--warmup",
    "2",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("corpus")
    voices = [Voice("espeak-ng", "en-us"), Voice("espeak-ng", "en-gb+f2")]
    sentences = sentence_pool(16, seed=5)
    write_corpus(directory / "train.parquet", "train", sentences[:12], voices, seed=0, augmented=True, workers=1)
    write_corpus(directory / "dev.parquet", "dev", sentences[12:], voices, seed=1, augmented=False, workers=1)
    return directory


def test_train_then_resume_writes_a_loadable_checkpoint(corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert train.main(["--data", str(corpus), "--out", str(out), "--epochs", "1", *TINY]) == 0
    first = torch.load(out / "last.pt", weights_only=False)
    log = capsys.readouterr().err
    assert f"step {first['step']}: dev WER" in log and "done: best dev WER" in log

    assert train.main(["--data", str(corpus), "--out", str(out), "--epochs", "2", "--resume", *TINY]) == 0
    resumed = torch.load(out / "last.pt", weights_only=False)
    assert resumed["step"] == 2 * first["step"]  # continued from the first run's step, not from zero
    assert not torch.equal(resumed["network"]["ctc_head.weight"], first["network"]["ctc_head.weight"])

    model = load_model(out / "model")
    assert model.config.encoder_config.hidden_size == 32 and model.config.vocab_size == 65
    assert model.tokenizer.blank_id == 64  # the blank is the last id, as in the official checkpoints
    [transcript] = model.transcribe(torch.zeros(16000).numpy())
    assert isinstance(transcript.text, str)


def test_init_fine_tunes_a_trained_model_scored_on_several_dev_splits(corpus: Path, tmp_path: Path, capsys) -> None:
    base = tmp_path / "base"
    assert train.main(["--data", str(corpus), "--out", str(base), "--epochs", "1", *TINY]) == 0
    tuned = tmp_path / "tuned"
    schedule = ["--max-frames", "1200", "--eval-every", "3", "--warmup", "2", "--epochs", "1", "--lr", "1e-9"]
    args = ["--data", str(corpus), "--out", str(tuned), "--init", str(base / "model"), "--dev", "dev", "train"]
    assert train.main([*args, *schedule]) == 0
    log = capsys.readouterr().err
    assert "dev WER" in log and "train WER" in log

    before, after = load_model(base / "model"), load_model(tuned / "model")
    assert after.config.encoder_config.hidden_size == 32  # the architecture came from the --init model
    assert (tuned / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
    tuned_weights = dict(after.network.named_parameters())  # (batch-norm statistics move whatever the rate)
    for name, weight in before.network.named_parameters():  # a learning rate of 1e-9 leaves the weights in place
        torch.testing.assert_close(tuned_weights[name], weight, atol=1e-5, rtol=0)


def test_init_with_another_vocab_size_keeps_the_encoder_under_a_new_tokenizer(corpus: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    assert train.main(["--data", str(corpus), "--out", str(base), "--epochs", "1", *TINY]) == 0
    tuned = tmp_path / "tuned"
    schedule = ["--max-frames", "1200", "--eval-every", "3", "--warmup", "2", "--epochs", "1", "--lr", "1e-9"]
    assert (
        train.main(
            ["--data", str(corpus), "--out", str(tuned), "--init", str(base / "model"), "--vocab-size", "49", *schedule]
        )
        == 0
    )

    before, after = load_model(base / "model"), load_model(tuned / "model")
    assert after.config.vocab_size == 49 and after.tokenizer.vocab_size == 49 and after.tokenizer.blank_id == 48
    old_weights, new_weights = dict(before.network.named_parameters()), dict(after.network.named_parameters())
    for name, weight in new_weights.items():
        if name.startswith("encoder."):
            torch.testing.assert_close(weight, old_weights[name], atol=1e-5, rtol=0)
    # each new piece's head row began as the old head's row for the first old piece that spells it
    rows = [before.tokenizer.first_piece(after.tokenizer.piece(i)) for i in range(48)] + [before.tokenizer.blank_id]
    word_starts = [i for i in range(1, 48) if after.tokenizer.starts_word(i)]
    assert word_starts and all(before.tokenizer.starts_word(rows[i]) for i in word_starts)
    for name in ("ctc_head.weight", "ctc_head.bias"):
        torch.testing.assert_close(new_weights[name], old_weights[name][rows], atol=1e-5, rtol=0)


def test_kept_evaluations_average_into_one_model(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train.main(["--data", str(corpus), "--out", str(out), "--epochs", "2", "--keep-evaluations", *TINY]) == 0
    last_step = torch.load(out / "last.pt", weights_only=False)["step"]
    evaluated = sorted({*range(3, last_step + 1, 3), last_step})  # every --eval-every 3 steps, and the last
    kept = sorted(out.glob("step-*"), key=lambda directory: int(directory.name.removeprefix("step-")))
    assert [directory.name for directory in kept] == [f"step-{step}" for step in evaluated]

    assert average.main([*(str(directory) for directory in kept[-2:]), "--out", str(tmp_path / "averaged")]) == 0
    states = [load_model(directory).network.state_dict() for directory in kept[-2:]]
    averaged = load_model(tmp_path / "averaged").network.state_dict()
    head = "ctc_head.weight"
    torch.testing.assert_close(averaged[head], (states[0][head] + states[1][head]) / 2)


def test_resume_needs_a_state(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--resume: .*last.pt does not exist"):
        train.main(["--data", str(corpus), "--out", str(tmp_path / "empty"), "--resume", *TINY])

"""Checkpoint averaging: the mean of the weights, in the official layout, and refusals of unlike models."""

from __future__ import annotations

import pytest
import torch

from model import load_model
from recipe import average
from tests.reference import SMALL_ENCODER, make_reference_checkpoint


def test_average_state_is_the_elementwise_mean_in_each_tensors_dtype() -> None:
    states = [
        {"weight": torch.tensor([1.0, 2.0], dtype=torch.float16), "steps": torch.tensor(3)},
        {"weight": torch.tensor([2.0, 4.0], dtype=torch.float16), "steps": torch.tensor(8)},
        {"weight": torch.tensor([6.0, 0.0], dtype=torch.float16), "steps": torch.tensor(9)},
    ]
    averaged = average.average_state(states)
    assert averaged["weight"].dtype == torch.float16
    assert averaged["weight"].tolist() == [3.0, 2.0]
    assert averaged["steps"].item() == 3  # counters are the first state's, not a mean


def test_averaged_checkpoint_has_the_mean_weights_and_loads_in_transformers(small_checkpoint, tmp_path) -> None:
    from transformers import ParakeetForCTC

    other = make_reference_checkpoint(tmp_path / "other", SMALL_ENCODER, vocab_size=257, seed=1)
    out = tmp_path / "averaged"
    assert average.main([str(small_checkpoint.directory), str(other.directory), "--out", str(out)]) == 0

    ours = load_model(out).network.state_dict()
    first, second = (load_model(d).network.state_dict() for d in (small_checkpoint.directory, other.directory))
    for name, value in ours.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (first[name] + second[name]) / 2, rtol=0, atol=1e-6)

    reference = ParakeetForCTC.from_pretrained(out).state_dict()
    expected = {
        name: (value + other.model.state_dict()[name]) / 2
        for name, value in small_checkpoint.model.state_dict().items()
        if value.is_floating_point()
    }
    for name, value in expected.items():
        torch.testing.assert_close(reference[name], value, rtol=0, atol=1e-6)


def test_models_of_different_architectures_are_refused(
    small_checkpoint, small_tdt_checkpoint, tmp_path, capsys
) -> None:
    ctc, tdt, out = small_checkpoint.directory, small_tdt_checkpoint.directory, tmp_path / "averaged"
    assert average.main([str(ctc), str(tdt), "--out", str(out)]) == 1
    assert f"cannot average {tdt} with {ctc}: their config.json differ" in capsys.readouterr().err
    assert not out.exists()


def test_one_model_is_not_an_average(small_checkpoint, tmp_path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        average.main([str(small_checkpoint.directory), "--out", str(tmp_path / "averaged")])
    assert exit_info.value.code == 2

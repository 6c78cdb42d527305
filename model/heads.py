"""Output heads on top of the encoder; for now the CTC head and the encoder+CTC network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import CTCConfig
from model.encoder import FastConformerEncoder


class CTCHead(nn.Module):
    """A 1x1 convolution in the checkpoints (weight (vocab, hidden, 1)); applied as the linear map it is."""

    def __init__(self, hidden_size: int, vocab_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size, 1))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight[..., 0], self.bias)


class ParakeetCTC(nn.Module):
    """Log-mel features -> CTC logits (B, T', vocab) and valid lengths; `loss` trains it."""

    def __init__(self, config: CTCConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = FastConformerEncoder(config.encoder_config)
        self.ctc_head = CTCHead(config.encoder_config.hidden_size, config.vocab_size)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, lengths = self.encoder(features, lengths)
        return self.ctc_head(hidden), lengths

    def loss(
        self, features: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
    ) -> torch.Tensor:
        """CTC loss with the checkpoint's reduction; `targets` (B, U) right-padded, blank never a target."""
        logits, logit_lengths = self(features, lengths)
        log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
        return F.ctc_loss(
            log_probs,
            targets,
            logit_lengths,
            target_lengths,
            blank=self.config.blank_id,
            reduction=self.config.ctc_loss_reduction,
            zero_infinity=self.config.ctc_zero_infinity,
        )

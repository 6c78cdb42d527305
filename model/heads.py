"""Output heads on top of the encoder: the CTC head, and the transducers' prediction network and joint.

Module and parameter names follow the Hugging Face checkpoints (`ParakeetForCTC`, `ParakeetForRNNT`,
`ParakeetForTDT`), so their state dicts load without renaming."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import CTCConfig, ModelConfig, RNNTConfig
from model.encoder import FastConformerEncoder, activation


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


LSTMState = tuple[torch.Tensor, torch.Tensor]  # (hidden, cell), each (layers, batch, decoder_hidden_size)


class PredictionNetwork(nn.Module):
    """The transducer's language model: previous token -> LSTM -> projection into the joint's space."""

    def __init__(self, config: RNNTConfig) -> None:
        super().__init__()
        size = config.decoder_hidden_size
        self.embedding = nn.Embedding(config.vocab_size, size)
        self.lstm = nn.LSTM(size, size, num_layers=config.num_decoder_layers, batch_first=True)
        self.decoder_projector = nn.Linear(size, size)

    def initial_state(self, batch: int) -> LSTMState:
        weight = self.decoder_projector.weight
        zeros = weight.new_zeros(self.lstm.num_layers, batch, self.lstm.hidden_size)
        return zeros, zeros.clone()

    def forward(self, tokens: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """(batch,) previous tokens -> (batch, decoder_hidden_size) joint input and the next state.

        One step of the LSTM's layers, written out: `nn.LSTM` (which holds the weights, under the checkpoint's
        names) re-lays out its weights for oneDNN on every CPU call, ten times the cost of a step."""
        hidden, cell = state
        x, hiddens, cells = self.embedding(tokens), [], []
        for layer in range(self.lstm.num_layers):
            gates = F.linear(
                x, getattr(self.lstm, f"weight_ih_l{layer}"), getattr(self.lstm, f"bias_ih_l{layer}")
            ) + F.linear(
                hidden[layer], getattr(self.lstm, f"weight_hh_l{layer}"), getattr(self.lstm, f"bias_hh_l{layer}")
            )
            input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=-1)
            cells.append(torch.sigmoid(forget_gate) * cell[layer] + torch.sigmoid(input_gate) * torch.tanh(candidate))
            x = torch.sigmoid(output_gate) * torch.tanh(cells[-1])
            hiddens.append(x)
        return self.decoder_projector(x), (torch.stack(hiddens), torch.stack(cells))


class JointNetwork(nn.Module):
    """Projected encoder frame + prediction -> token logits (vocab, blank last), then TDT duration logits."""

    def __init__(self, config: RNNTConfig) -> None:
        super().__init__()
        self.activation = activation(config.hidden_act)
        self.head = nn.Linear(config.decoder_hidden_size, config.vocab_size + len(config.durations))

    def forward(self, encoded: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        return self.head(self.activation(encoded + predicted))


class TransducerDecoder(nn.Module):
    """What greedy decoding needs besides the encoder output: prediction network and joint.

    The Decoder stage loads only this part of a checkpoint."""

    def __init__(self, config: RNNTConfig) -> None:
        super().__init__()
        self.config = config
        self.decoder = PredictionNetwork(config)
        self.joint = JointNetwork(config)


class ParakeetTransducer(TransducerDecoder):
    """Log-mel features -> encoder output projected into the joint's space (B, T', decoder_hidden_size) and
    valid lengths; decoding then runs the prediction network and joint (`model.decoding.greedy_transducer`)."""

    def __init__(self, config: RNNTConfig) -> None:
        super().__init__(config)
        self.encoder = FastConformerEncoder(config.encoder_config)
        self.encoder_projector = nn.Linear(config.encoder_config.hidden_size, config.decoder_hidden_size)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, lengths = self.encoder(features, lengths)
        return self.encoder_projector(hidden), lengths


Network = ParakeetCTC | ParakeetTransducer


def build_network(config: ModelConfig) -> Network:
    """The network a config describes, with freshly initialised weights."""
    return ParakeetCTC(config) if isinstance(config, CTCConfig) else ParakeetTransducer(config)

"""FastConformer encoder: striding subsampling (x8), relative-position self-attention, conformer blocks.

Module and parameter names follow the Hugging Face checkpoints, so their state dicts load without renaming.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ConfigError, EncoderConfig

T = TypeVar("T", int, torch.Tensor)

# `hidden_act` of the checkpoints' configs: the encoder's (silu) and the transducer joint's (relu; NeMo's joint also
# offers tanh and sigmoid), as transformers' ACT2FN names them.
ACTIVATIONS = {
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def activation(name: str) -> nn.Module:
    """The module of a config's `hidden_act`; ConfigError naming the supported ones for any other."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"hidden_act {name!r} is not supported; expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def length_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(batch,) lengths -> (batch, max_length) bool, True on valid steps."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


class Subsampling(nn.Module):
    """Conv2d over (time, mel), then depth-wise + point-wise pairs, each striding both axes by 2."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        channels, kernel = config.subsampling_conv_channels, config.subsampling_conv_kernel_size
        self.stride, self.kernel, self.padding = config.subsampling_conv_stride, kernel, (kernel - 1) // 2
        conv = dict(kernel_size=kernel, stride=self.stride, padding=self.padding)
        # ReLUs stay in the list so the conv indices match the checkpoint's `layers.N` names.
        layers: list[nn.Module] = [nn.Conv2d(1, channels, **conv), nn.ReLU()]
        for _ in range(config.num_subsampling_layers - 1):
            layers += [
                nn.Conv2d(channels, channels, groups=channels, **conv),
                nn.Conv2d(channels, channels, 1),
                nn.ReLU(),
            ]
        self.layers = nn.ModuleList(layers)
        mel_bins_out = config.num_mel_bins // config.subsampling_factor
        self.linear = nn.Linear(channels * mel_bins_out, config.hidden_size)

    def _strided_length(self, lengths: T) -> T:
        """Frames (int or tensor) after one strided conv."""
        return (lengths + 2 * self.padding - self.kernel) // self.stride + 1

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            if isinstance(layer, nn.Conv2d) and layer.stride != (1, 1):
                lengths = self._strided_length(lengths)
        return lengths

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # On CPU one utterance at a time keeps the activations in cache (the first conv's output is 20 MB per 10 s of
        # audio), which is several times faster; a GPU wants the whole batch.
        step = 1 if features.device.type == "cpu" else len(features)
        rows = [self._convolve(features[i : i + step], lengths[i : i + step]) for i in range(0, len(features), step)]
        return self.linear(torch.cat(rows)), self.output_lengths(lengths)

    def _convolve(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, time, mel) -> (batch, time / 8, channels * mel / 8); the activations stay channels-last, where
        oneDNN's depth-wise and point-wise convs are fast."""
        first = self.layers[0]
        # The first conv has one input channel: as a matmul over unfolded patches it comes out channels-last.
        patches = F.unfold(features.unsqueeze(1), first.kernel_size, padding=first.padding, stride=first.stride)
        hidden = F.linear(patches.transpose(1, 2), first.weight.flatten(1), first.bias)
        time, mels = (self._strided_length(size) for size in features.shape[1:])
        hidden = hidden.view(len(features), time, mels, -1).permute(0, 3, 1, 2)
        for layer in self.layers:
            if isinstance(layer, nn.ReLU):
                hidden = hidden.relu_()
                continue
            if layer is not first:
                weight = layer.weight.contiguous(memory_format=torch.channels_last)
                hidden = F.conv2d(hidden, weight, layer.bias, layer.stride, layer.padding, groups=layer.groups)
            if layer.stride != (1, 1):
                lengths = self._strided_length(lengths)
            # Zero the padded frames after every conv so they never leak into valid ones.
            hidden = hidden.mul_(length_mask(lengths, hidden.shape[2])[:, None, :, None])
        batch, channels, time, mels = hidden.shape
        return hidden.transpose(1, 2).reshape(batch, time, channels * mels)


def relative_positions(length: int, hidden_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal embeddings of relative distances length-1 .. -(length-1), sin/cos interleaved: (2L-1, hidden)."""
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, hidden_size, 2, dtype=torch.float, device=device) / hidden_size))
    distances = torch.arange(length - 1, -length, -1, device=device).float()
    angles = distances[:, None] * inv_freq
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(2 * length - 1, hidden_size).to(dtype)


class FeedForward(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.linear1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.attention_bias)
        self.activation = activation(config.hidden_act)
        self.linear2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.attention_bias)
        self.dropout = config.activation_dropout

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = F.dropout(self.activation(self.linear1(hidden)), self.dropout, self.training)
        return self.linear2(hidden)


class RelPositionAttention(nn.Module):
    """Transformer-XL attention: content term with bias u, position term with bias v (Dai et al. 2019, sec. 3.3)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        hidden, self.heads, self.key_value_heads = (
            config.hidden_size,
            config.num_attention_heads,
            config.key_value_heads,
        )
        self.head_dim = hidden // self.heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(hidden, hidden, bias=config.attention_bias)
        self.k_proj = nn.Linear(hidden, self.key_value_heads * self.head_dim, bias=config.attention_bias)
        self.v_proj = nn.Linear(hidden, self.key_value_heads * self.head_dim, bias=config.attention_bias)
        self.o_proj = nn.Linear(hidden, hidden, bias=config.attention_bias)
        self.relative_k_proj = nn.Linear(hidden, hidden, bias=False)
        self.bias_u = nn.Parameter(torch.zeros(self.heads, self.head_dim))
        self.bias_v = nn.Parameter(torch.zeros(self.heads, self.head_dim))

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, C); positions (2T-1, C); padding (B, 1, 1, T) bool, True on padded keys."""
        batch, time, _ = hidden.shape
        split = (batch, time, -1, self.head_dim)
        query = self.q_proj(hidden).view(split)
        key = self.k_proj(hidden).view(split).transpose(1, 2)
        value = self.v_proj(hidden).view(split).transpose(1, 2)
        rel_key = self.relative_k_proj(positions).view(-1, self.heads, self.head_dim).permute(1, 2, 0)

        # Position term (b)+(d), shifted so column j holds the score of distance i-j; it becomes the additive mask.
        # Masking the padded keys is enough: a padded query's output never reaches a valid frame.
        position_scores = ((query + self.bias_v) * self.scaling).transpose(1, 2) @ rel_key
        position_scores = relative_shift(position_scores).masked_fill(padding, torch.finfo(hidden.dtype).min)
        out = F.scaled_dot_product_attention(
            (query + self.bias_u).transpose(1, 2),
            key,
            value,
            attn_mask=position_scores,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scaling,
            enable_gqa=self.key_value_heads < self.heads,  # query head h attends with key/value head h // groups
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, time, -1))


def relative_shift(scores: torch.Tensor) -> torch.Tensor:
    """(B, H, T, 2T-1) scores by relative distance T-1 .. -(T-1) -> (B, H, T, T) with [i, j] at distance i-j.

    Transformer-XL pads, reshapes and slices for this; a strided view of the same memory does it without a copy.
    """
    batch_stride, head_stride, row_stride, _ = scores.stride()
    time = scores.shape[2]
    return scores.as_strided(
        (*scores.shape[:2], time, time),
        (batch_stride, head_stride, row_stride - 1, 1),
        scores.storage_offset() + time - 1,
    )


class ConvolutionModule(nn.Module):
    """Point-wise conv + GLU, depth-wise conv, batch norm, activation, point-wise conv."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        channels, kernel, bias = config.hidden_size, config.conv_kernel_size, config.convolution_bias
        self.pointwise_conv1 = nn.Conv1d(channels, 2 * channels, 1, bias=bias)
        self.depthwise_conv = nn.Conv1d(
            channels, channels, kernel, padding=(kernel - 1) // 2, groups=channels, bias=bias
        )
        self.norm = nn.BatchNorm1d(channels)
        self.activation = activation(config.hidden_act)
        self.pointwise_conv2 = nn.Conv1d(channels, channels, 1, bias=bias)

    def forward(self, hidden: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, C); padding (B, T, 1) bool, True on padded frames."""
        # The point-wise convs are matmuls over (B, T, C): no transposes around them.
        hidden = F.glu(F.linear(hidden, self.pointwise_conv1.weight[..., 0], self.pointwise_conv1.bias), dim=-1)
        hidden = hidden.masked_fill(padding, 0.0)  # padding must not enter the depth-wise window
        # oneDNN's depth-wise conv is 3x slower on a transposed view than on a copy.
        hidden = self.activation(self.norm(self.depthwise_conv(hidden.transpose(1, 2).contiguous()))).transpose(1, 2)
        return F.linear(hidden, self.pointwise_conv2.weight[..., 0], self.pointwise_conv2.bias)


class ConformerBlock(nn.Module):
    """Macaron block: half-step feed-forward, attention, convolution, half-step feed-forward, layer norm."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.feed_forward1 = FeedForward(config)
        self.self_attn = RelPositionAttention(config)
        self.conv = ConvolutionModule(config)
        self.feed_forward2 = FeedForward(config)
        self.norm_feed_forward1 = nn.LayerNorm(config.hidden_size)
        self.norm_self_att = nn.LayerNorm(config.hidden_size)
        self.norm_conv = nn.LayerNorm(config.hidden_size)
        self.norm_feed_forward2 = nn.LayerNorm(config.hidden_size)
        self.norm_out = nn.LayerNorm(config.hidden_size)

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """padding (B, T) bool, True on padded frames."""
        hidden = torch.add(hidden, self.feed_forward1(self.norm_feed_forward1(hidden)), alpha=0.5)
        hidden = hidden + self.self_attn(self.norm_self_att(hidden), positions, padding[:, None, None, :])
        hidden = hidden + self.conv(self.norm_conv(hidden), padding[..., None])
        hidden = torch.add(hidden, self.feed_forward2(self.norm_feed_forward2(hidden)), alpha=0.5)
        return self.norm_out(hidden)


class FastConformerEncoder(nn.Module):
    """Log-mel (B, frames, mels) + frame counts -> hidden states (B, T', hidden) + valid lengths, T' = frames / 8."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.input_scale = math.sqrt(config.hidden_size) if config.scale_input else 1.0
        self.subsampling = Subsampling(config)
        self.layers = nn.ModuleList(ConformerBlock(config) for _ in range(config.num_hidden_layers))

    def output_lengths(self, frame_lengths: torch.Tensor) -> torch.Tensor:
        return self.subsampling.output_lengths(frame_lengths)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, lengths = self.subsampling(features, lengths)
        time = hidden.shape[1]
        if time > self.config.max_position_embeddings:
            raise ValueError(
                f"input of {time} encoder frames exceeds max_position_embeddings={self.config.max_position_embeddings}"
            )
        hidden = hidden * self.input_scale
        positions = relative_positions(time, self.config.hidden_size, hidden.device, hidden.dtype)
        hidden = F.dropout(hidden, self.config.dropout, self.training)
        positions = F.dropout(positions, self.config.dropout_positions, self.training)

        padding = ~length_mask(lengths, time)
        for layer in self.layers:
            if self.training and self.config.layerdrop > 0 and torch.rand(()) < self.config.layerdrop:
                continue
            hidden = layer(hidden, positions, padding)
        return hidden, lengths

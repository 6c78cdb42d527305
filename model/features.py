"""Log-mel features, computed exactly as the reference `ParakeetFeatureExtractor`, batched, on any device."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model.config import FeatureConfig

LOG_GUARD = 2.0**-24  # added before the log so silence stays finite
NORM_EPSILON = 1e-5  # added to the per-feature standard deviation


def _hz_to_slaney_mel(freq: np.ndarray) -> np.ndarray:
    linear = 3.0 * freq / 200.0
    log_region = 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(freq >= 1000.0, log_region, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    linear = 200.0 * mel / 3.0
    log_region = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0))
    return np.where(mel >= 15.0, log_region, linear)


def mel_filter_bank(num_mels: int, n_fft: int, sampling_rate: int) -> torch.Tensor:
    """Slaney-scale, area-normalised triangular filters, shape (num_mels, n_fft // 2 + 1), as librosa builds them."""
    fft_freqs = np.linspace(0, sampling_rate // 2, n_fft // 2 + 1)
    mels = np.linspace(_hz_to_slaney_mel(np.array(0.0)), _hz_to_slaney_mel(np.array(sampling_rate / 2)), num_mels + 2)
    edges = _slaney_mel_to_hz(mels)
    slopes = edges[None, :] - fft_freqs[:, None]
    widths = np.diff(edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    # Cast before normalising: the reference does, and the last bit of every weight depends on it.
    filters = np.maximum(0.0, np.minimum(down, up)).astype(np.float32)
    filters = (filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(filters.T))


def pad_waveforms(waveforms: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad mono float32 waveforms with zeros into (batch, samples) plus their lengths."""
    lengths = torch.tensor([len(w) for w in waveforms], dtype=torch.long)
    batch = torch.zeros(len(waveforms), int(lengths.max()), dtype=torch.float32)
    for row, waveform in enumerate(waveforms):
        batch[row, : len(waveform)] = torch.from_numpy(waveform)
    return batch, lengths


class LogMelFeatures(nn.Module):
    """Waveforms (batch, samples) + lengths -> normalised log-mel (batch, frames, mels) + frame counts."""

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.win_length, periodic=False), persistent=False)
        self.register_buffer(
            "mel_filters", mel_filter_bank(config.feature_size, config.n_fft, config.sampling_rate), persistent=False
        )

    @property
    def min_samples(self) -> int:
        """Shortest input with two valid frames: the per-feature variance needs at least two."""
        return 2 * self.config.hop_length

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(sample_lengths, self.config.hop_length, rounding_mode="floor")

    @torch.no_grad()
    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        waveforms = waveforms.to(torch.float32)
        lengths = lengths.to(waveforms.device)
        valid_samples = torch.arange(waveforms.shape[1], device=waveforms.device)[None, :] < lengths[:, None]
        return self._normalised_log_mel(self._preemphasised(waveforms).masked_fill(~valid_samples, 0.0), lengths)

    @torch.no_grad()
    def one(self, waveform: torch.Tensor) -> torch.Tensor:
        """One waveform (samples,) -> its (frames, mels) features: forward's bits for a batch of it alone, without
        the masking that padding needs. Every runner featurizes its windows one at a time through this."""
        waveforms = waveform.to(torch.float32)[None]
        lengths = torch.tensor([waveforms.shape[1]], device=waveforms.device)
        features, frame_lengths = self._normalised_log_mel(self._preemphasised(waveforms), lengths)
        return features[0, : int(frame_lengths[0])]

    def _preemphasised(self, waveforms: torch.Tensor) -> torch.Tensor:
        if not self.config.preemphasis:
            return waveforms
        return torch.cat([waveforms[:, :1], waveforms[:, 1:] - self.config.preemphasis * waveforms[:, :-1]], dim=1)

    def _normalised_log_mel(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms zero past their lengths -> log-mel normalised per feature over each row's frames."""
        cfg = self.config
        stft = torch.stft(
            waveforms,
            cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            window=self.window,
            return_complex=True,
            pad_mode="constant",
        )
        # |X|^2 through sqrt then square, as the reference does, so the rounding matches too. re² + im² gives the
        # same bits as the reference's sum over view_as_real's last dimension, at a fifth of its cost; in place, as
        # the log below, to spare the allocations.
        parts = torch.view_as_real(stft)
        power = parts[..., 0].square().add_(parts[..., 1].square()).sqrt_().square_()
        features = (self.mel_filters @ power).add_(LOG_GUARD).log_().transpose(1, 2)

        frame_lengths = self.frame_lengths(lengths)
        mask = (torch.arange(features.shape[1], device=features.device)[None, :] < frame_lengths[:, None]).unsqueeze(-1)
        masked = features * mask
        mean = (masked.sum(dim=1) / frame_lengths[:, None]).unsqueeze(1)
        variance = ((masked - mean) ** 2 * mask).sum(dim=1) / (frame_lengths - 1)[:, None]
        features = (features - mean) / (variance.sqrt().unsqueeze(1) + NORM_EPSILON)
        return features * mask, frame_lengths

"""The featurizer deployment: decoding, resampling and log-mel features on CPU actors."""

from __future__ import annotations

import torch
from ray import serve

from deployments.config import AppConfig
from model.audio import SAMPLE_RATE, AudioSource
from model.stages import FeaturizedAudio, Featurizer


@serve.deployment(name="Featurizer", max_ongoing_requests=32, ray_actor_options={"num_cpus": 0.5})
class FeaturizerDeployment:
    def __init__(self, config: AppConfig) -> None:
        torch.set_num_threads(1)  # many small requests: one thread each, scale out with replicas
        self.featurizer = Featurizer.from_pretrained(config.model, config.buckets.max_frames, config.context_seconds)

    def __call__(self, audio: AudioSource, sample_rate: int = SAMPLE_RATE, name: str = "audio") -> FeaturizedAudio:
        """Raises AudioError (a ValueError), its message starting with `name`, for undecodable audio."""
        return self.featurizer(audio, sample_rate, name)

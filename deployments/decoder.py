"""The decoder deployment: CTC collapse, detokenisation and word timestamps on CPU."""

from __future__ import annotations

import numpy as np
from ray import serve

from deployments.config import AppConfig
from model.decoding import Transcript
from pipeline.stages import Decoder, Window


@serve.deployment(name="Decoder", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
class DecoderDeployment:
    def __init__(self, config: AppConfig) -> None:
        self.decoder = Decoder.from_pretrained(config.model)

    def __call__(self, windows: list[Window], best_ids: list[np.ndarray], duration: float) -> Transcript:
        return self.decoder(windows, best_ids, duration)

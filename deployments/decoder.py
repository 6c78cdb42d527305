"""The decoder deployment on CPU: CTC collapse, or the transducer's greedy loop batched across requests;
detokenisation and word timestamps."""

from __future__ import annotations

import numpy as np
import torch
from ray import serve

from deployments.config import AppConfig
from model.decoding import Transcript
from pipeline.stages import Decoder, Window


@serve.deployment(name="Decoder", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
class DecoderDeployment:
    def __init__(self, config: AppConfig) -> None:
        torch.set_num_threads(1)  # small per-step matrices: a thread's overhead outweighs its share of the work
        self.decoder = Decoder.from_pretrained(config.model)
        self._decode_batch.set_max_batch_size(config.decoder_batch_size)
        self._decode_batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    async def __call__(self, windows: list[Window], encoded: list[np.ndarray], duration: float) -> Transcript:
        return await self._decode_batch((windows, encoded, duration))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _decode_batch(self, utterances: list[tuple[list[Window], list[np.ndarray], float]]) -> list[Transcript]:
        return self.decoder.decode_many(utterances)

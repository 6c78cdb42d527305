"""The decoder deployment on CPU: CTC collapse, or the transducer's greedy loop batched across requests;
detokenisation and word timestamps."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from ray import serve

from deployments.config import DECODER_BATCHING, AppConfig, Batching
from model.decoding import Transcript
from model.stages import Decoder
from model.windows import Window


@serve.deployment(name="Decoder", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
class DecoderDeployment:
    def __init__(self, config: AppConfig) -> None:
        torch.set_num_threads(1)  # small per-step matrices: a thread's overhead outweighs its share of the work
        self.decoder = Decoder.from_pretrained(config.model)
        self.reconfigure(asdict(DECODER_BATCHING))

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Batching (deployments.config.Batching) from the deployment's `user_config`."""
        batching = Batching.from_dict(user_config)
        self._decode_batch.set_max_batch_size(batching.max_batch_size or DECODER_BATCHING.max_batch_size)
        self._decode_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    async def __call__(self, windows: list[Window], encoded: list[np.ndarray], duration: float) -> Transcript:
        return await self._decode_batch((windows, encoded, duration))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _decode_batch(self, utterances: list[tuple[list[Window], list[np.ndarray], float]]) -> list[Transcript]:
        return self.decoder.decode_many(utterances)

"""The encoder deployment: batches windows from many requests into fixed-shape buckets on one accelerator."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from ray import serve
from ray.serve.metrics import Histogram

from deployments.batching import Batcher, WindowChunk, chunk_rank, chunk_windows
from deployments.config import ENCODER_BATCHING, AppConfig, Batching
from model.stages import Encoder
from pipeline.resources import cpu_threads

logger = logging.getLogger("ray.serve")

RATIO_BOUNDARIES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
SECONDS_BOUNDARIES = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


def usable_device(device: str) -> str:
    """`device`, or cpu when it is cuda and this node has no working CUDA (a driver or torch build without it)."""
    if device == "cuda" and not torch.cuda.is_available():
        # Serving slowly beats a replica that crash-loops while it holds a GPU node's slot.
        logger.warning("Encoder replica was placed for cuda but torch.cuda.is_available() is False: running on cpu")
        return "cpu"
    return device


# No access log line per call: the ingress logs each request, and the Encoder's CPU is what a GPU node has least of.
@serve.deployment(
    name="Encoder", max_ongoing_requests=256, health_check_period_s=10, logging_config={"enable_access_log": False}
)
class EncoderDeployment:
    """`encode(windows)` -> per window, best CTC ids per encoder frame, or a transducer's projected frames; the
    windows of concurrent calls share batches."""

    def __init__(self, config: AppConfig, device: str) -> None:
        device = usable_device(device)
        # One thread runs all model work, so CUDA graphs are recorded and replayed on the same thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self.encoder = self._executor.submit(self.load_encoder, config, device).result()
        if self.encoder.fixed_shapes:
            self._executor.submit(self.encoder.warm_up).result()
        # Batches of up to max_size windows, the requests that had fewer encoded first. Its sizes: reconfigure's.
        self.batcher = Batcher(self._encode_batch, max_size=1, size=chunk_windows, rank=chunk_rank)
        self.reconfigure(asdict(ENCODER_BATCHING))
        self.fill_ratio = Histogram(
            "parakeet_encoder_batch_fill_ratio",
            boundaries=RATIO_BOUNDARIES,
            description="Share of a padded batch that real feature frames fill.",
        )
        self.batch_size = Histogram(
            "parakeet_encoder_batch_size", boundaries=[1, 2, 4, 8, 16, 32, 64], description="Windows per encoder batch."
        )
        self.queue_wait = Histogram(
            "parakeet_encoder_queue_wait_seconds",
            boundaries=SECONDS_BOUNDARIES,
            description="Time a request's windows wait at the encoder before their batch starts.",
        )

    def load_encoder(self, config: AppConfig, device: str) -> Encoder:
        """On cpu the encoder runs on cpu_threads() threads, a call's batches side by side on them (model.stages:
        Encoder); on cuda, one batch at a time."""
        encoder = Encoder.from_pretrained(
            config.model, config.buckets, device, config.torch_dtype(device), config.compiles_on(device)
        )
        if device == "cpu":
            encoder.use_threads(cpu_threads(config.encoder_threads))
        return encoder

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Batching (deployments.config.Batching) from the deployment's `user_config`: windows per batch (a
        request with more runs in a batch of its own), which the Encoder stage runs in as many bucket-sized batches
        as they need."""
        batching = Batching.from_dict(user_config)
        self.batcher.max_size = batching.max_batch_size or self.encoder.buckets.max_batch_size
        self.batcher.wait_s = batching.batch_wait_timeout_s

    async def encode(
        self,
        requests: list[list[np.ndarray]],
        scored: list[bool] | None = None,
        windows_before: list[int] | None = None,
    ) -> list[list[np.ndarray] | Exception]:
        """Requests' feature windows (an ingress replica sends those that queued together in one call, a long
        request's in chunks) -> each request's encoder outputs (CTC frame scores for the requests `scored` marks:
        their decoding searches), or the exception its windows raised; all calls' requests share batches, those
        with fewer of their request's windows before them (`windows_before`: 0 for all by default) first."""
        scored = scored or [False] * len(requests)
        windows_before = windows_before or [0] * len(requests)
        if not len(scored) == len(windows_before) == len(requests):
            raise ValueError(
                f"{len(requests)} requests, {len(scored)} scored flags and {len(windows_before)} windows_before: "
                "one of each per request"
            )
        chunks = [WindowChunk(*request) for request in zip(requests, scored, windows_before)]
        return await asyncio.gather(*(self._encode_chunk(chunk) for chunk in chunks))

    async def _encode_chunk(self, chunk: WindowChunk) -> list[np.ndarray] | Exception:
        try:
            for features in chunk.windows:
                self.encoder.check(features)  # a bad window fails its request alone, before it joins a batch
        except ValueError as err:
            return err
        return await self.batcher(chunk)

    async def _encode_batch(self, chunks: list[WindowChunk]) -> list[list[np.ndarray] | Exception]:
        started = time.monotonic()
        for chunk in chunks:
            self.queue_wait.observe(started - chunk.queued)
        windows = [window for chunk in chunks for window in chunk.windows]
        for group, _ in self.encoder.plan(windows):
            self.batch_size.observe(len(group))
        self.fill_ratio.observe(self.encoder.fill_ratio(windows))
        loop = asyncio.get_running_loop()
        requests, scored = [chunk.windows for chunk in chunks], [chunk.scored for chunk in chunks]
        return await loop.run_in_executor(self._executor, self.encoder.encode_isolating_failures, requests, scored)

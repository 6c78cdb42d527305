"""The Serve application: `serve run deployments.app:build_app`, serve_config.yaml, or `parakeet serve`."""

from __future__ import annotations

from typing import Any

import ray
from ray.serve import Application

from deployments.config import AppConfig
from deployments.decoder import DecoderDeployment
from deployments.encoder import EncoderDeployment
from deployments.featurizer import FeaturizerDeployment
from deployments.ingress import Transcriber


def resolve_device(config: AppConfig) -> str:
    """`auto` picks cuda when the Ray cluster has any GPU, so a CPU-only machine needs no flag."""
    if config.device != "auto":
        return config.device
    return "cuda" if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Featurizer (CPU) -> Encoder (one GPU each, or CPU) -> Decoder (CPU), behind the HTTP/handle ingress."""
    config = AppConfig.from_dict(args)
    device = resolve_device(config)
    encoder_resources = {"num_cpus": 1, "num_gpus": 1} if device == "cuda" else {"num_cpus": 1}
    encoder = EncoderDeployment.options(ray_actor_options=encoder_resources).bind(config, device)
    return Transcriber.bind(FeaturizerDeployment.bind(config), encoder, DecoderDeployment.bind(config), config)

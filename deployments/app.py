"""The Serve application: `serve run deployments.app:build_app`, serve_config.yaml, or `parakeet serve`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ray.serve import Application

from deployments.config import DECODER_BATCHING, ENCODER_BATCHING, AppConfig
from deployments.decoder import DecoderDeployment
from deployments.encoder import EncoderDeployment
from deployments.featurizer import FeaturizerDeployment
from deployments.ingress import Transcriber
from pipeline.resources import encoder_resources, resolve_device


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Featurizer (CPU) -> Encoder (one GPU each, or CPU) -> Decoder (CPU), behind the HTTP/handle ingress.

    The encoder's and decoder's batching is their `user_config`, so a config change reaches running replicas."""
    config = AppConfig.from_dict(args)
    device = resolve_device(config.device)
    encoder = EncoderDeployment.options(
        ray_actor_options=encoder_resources(device), user_config=asdict(ENCODER_BATCHING)
    ).bind(config, device)
    decoder = DecoderDeployment.options(user_config=asdict(DECODER_BATCHING)).bind(config)
    return Transcriber.bind(FeaturizerDeployment.bind(config), encoder, decoder, config)

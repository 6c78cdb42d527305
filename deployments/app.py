"""The Serve application: `serve run deployments.app:build_app`, serve_config.yaml, or `parakeet serve`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ray.serve import Application, Deployment

from deployments.config import DECODER_BATCHING, ENCODER_BATCHING, AppConfig
from deployments.encoder import EncoderDeployment
from deployments.ingress import Transcriber
from pipeline.resources import encoder_resources, resolve_device


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The Transcriber ingress (HTTP and handle API; featurizing and decoding on CPU) -> Encoder (one GPU each, or
    CPU). Their batching is their `user_config`, so a config change reaches running replicas."""
    return compose(AppConfig.from_dict(args))


def compose(config: AppConfig, encoder_deployment: Deployment = EncoderDeployment) -> Application:
    """The app of `config`; `encoder_deployment` is the Encoder's class (a benchmark's stand-in takes the model's
    work out)."""
    device = resolve_device(config.device)
    encoder = encoder_deployment.options(
        ray_actor_options=encoder_resources(device), user_config=asdict(ENCODER_BATCHING)
    ).bind(config, device)
    replicas = config.ingress_replicas
    return Transcriber.options(
        user_config=asdict(DECODER_BATCHING), autoscaling_config={"min_replicas": replicas, "max_replicas": replicas}
    ).bind(encoder, config)

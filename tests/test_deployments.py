"""The deployments' options: the app's args and each stage's batching (user_config), validated and applied."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("ray.serve")

from deployments.config import AppConfig, Batching  # noqa: E402
from deployments.encoder import EncoderDeployment  # noqa: E402
from pipeline.resources import HEAVY_ENCODER_PARAMETERS, cpu_threads  # noqa: E402


def test_batching_is_validated_naming_the_key() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown user_config key\(s\) batch_size; known: batch_wait_timeout_s, "
        r"max_batch_size",
    ):
        Batching.from_dict({"batch_size": 4})
    with pytest.raises(ValueError, match="batch_wait_timeout_s must be 0 to 10 seconds, got -1"):
        Batching.from_dict({"batch_wait_timeout_s": -1})
    with pytest.raises(ValueError, match="max_batch_size must be at least 1, got 0"):
        Batching.from_dict({"max_batch_size": 0})
    with pytest.raises(ValueError, match=r"unknown application option\(s\) decoder_batch_size"):
        AppConfig.from_dict({"decoder_batch_size": 8})
    with pytest.raises(ValueError, match="encoder_threads must be at least 1, got 0"):
        AppConfig.from_dict({"encoder_threads": 0})


def test_reconfigure_changes_a_replicas_batching_in_place(small_checkpoint) -> None:
    """What Serve calls with a deployment's new user_config, on the replica it has (no restart, no reload); the
    getters are the ones serve.batch offers user code."""
    replica = EncoderDeployment.func_or_class(AppConfig(model=str(small_checkpoint.directory), device="cpu"), "cpu")
    batch = replica._encode_batch
    assert (batch._get_max_batch_size(), batch._get_batch_wait_timeout_s()) == (8, 0.0)  # the largest batch bucket
    replica.reconfigure({"batch_wait_timeout_s": 0.002, "max_batch_size": 4})
    assert (batch._get_max_batch_size(), batch._get_batch_wait_timeout_s()) == (4, 0.002)
    replica.reconfigure({})  # a user_config without a key sets that key's default
    assert (batch._get_max_batch_size(), batch._get_batch_wait_timeout_s()) == (8, 0.0)
    with pytest.raises(ValueError, match="max_batch_size must be at least 1, got 0"):
        replica.reconfigure({"max_batch_size": 0})


def test_a_cpu_encoder_takes_all_cores_but_one_unless_told(small_checkpoint) -> None:
    """Ray sets OMP_NUM_THREADS=1 in its workers; the encoder chooses its own threads (pipeline.resources): a light
    one, as the test checkpoint, leaves a core to the CPU stages; a call's batches run side by side on them."""
    for asked, expected in ((None, max(1, (os.cpu_count() or 1) - 1)), (3, 3)):
        options = AppConfig(model=str(small_checkpoint.directory), device="cpu", encoder_threads=asked)
        assert EncoderDeployment.func_or_class(options, "cpu").encoder.threads == expected


def test_a_heavy_encoder_takes_every_core(monkeypatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert cpu_threads(None, 3_000_000) == 1
    assert cpu_threads(None, HEAVY_ENCODER_PARAMETERS - 1) == 1
    assert cpu_threads(None, HEAVY_ENCODER_PARAMETERS) == 2  # the 0.6b shape: 600M
    assert cpu_threads(1, 600_000_000) == 1  # asked for
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert cpu_threads(None, 3_000_000) == 1


def test_a_local_ray_gets_serves_throughput_mode_on_free_ports(monkeypatch) -> None:
    import socket

    from pipeline import resources

    for name in resources.HAPROXY_PORTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(resources, "haproxy_found", lambda: True)
    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        monkeypatch.setitem(resources.HAPROXY_PORTS, "RAY_SERVE_HAPROXY_STATS_PORT", taken)
        environment = resources.serve_environment()
    assert environment["RAY_SERVE_ENABLE_HA_PROXY"] == environment["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert int(environment["RAY_SERVE_HAPROXY_STATS_PORT"]) not in (taken, 0)  # another Ray's is left to it
    assert set(resources.HAPROXY_PORTS) <= set(environment)

    monkeypatch.setattr(resources, "haproxy_found", lambda: False)
    # No HAProxy here: Serve's own proxy.
    assert resources.serve_environment() == {**resources.THROUGHPUT_MODE, **resources.CONTROL_LOOP}

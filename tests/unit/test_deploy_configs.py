"""Every Serve config in deploy/ is one Serve accepts, names every deployment the app has,
and bounds generate's queue so a burst is deferred instead of piling up."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.common.settings import load_settings
from serve_app import read_serve_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DEPLOYMENTS = {"ingress", "decrypt", "intent", "retrieve", "generate", "encrypt", "push"}


@pytest.mark.parametrize("config", sorted(p.name for p in DEPLOY.glob("*.yaml")))
def test_each_serve_config_is_valid_and_bounds_the_generate_queue(config):
    _, args, options = read_serve_config(DEPLOY / config)
    load_settings(**args)  # what build_app does with them: unknown or invalid settings fail here
    assert set(options) == DEPLOYMENTS
    generate = options["generate"]
    assert generate["max_queued_requests"] > 0
    # More in flight than the engine batches would wait inside the replica, unseen by Serve's queue.
    assert generate["max_ongoing_requests"] <= load_settings(**args).generate_batch
    autoscaling = generate.get("autoscaling_config")
    if autoscaling:  # replicas follow the traffic: bounded, and quick to add for bursts
        assert autoscaling["max_replicas"] >= max(1, autoscaling["min_replicas"])
        assert autoscaling["target_ongoing_requests"] <= generate["max_ongoing_requests"]


def test_the_test_stack_scales_generate_to_zero_and_production_keeps_one():
    dev = read_serve_config(DEPLOY / "dev.yaml")[2]["generate"]["autoscaling_config"]
    prod = read_serve_config(DEPLOY / "prod.yaml")[2]["generate"]["autoscaling_config"]
    assert dev["min_replicas"] == 0 and prod["min_replicas"] >= 1
    assert prod["upscale_delay_s"] <= 10 < prod["downscale_delay_s"]

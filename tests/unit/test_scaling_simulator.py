"""The scaling simulator: the issue's targets on the shipped campaign trace, the deploy
files carrying the simulator's recommendation, preemptions that lose nothing, traces, and the
`wxassist simulate-scaling` command."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from functions.common.errors import ConfigurationError
from functions.generate.scaling.baselines import StaticPolicy
from functions.generate.scaling.compare import cluster_model, read_generate_scaling, recommend, run_policies, table
from functions.generate.scaling.simulator import ClusterModel, simulate
from functions.generate.scaling.traces import campaign_rate, campaign_trace, load_csv, load_trace

REPO = Path(__file__).resolve().parents[2]
PROD = read_generate_scaling(REPO / "deploy" / "prod.yaml")
SUMMARY_KEYS = {"gpu_hours", "cost", "passive_share", "within_15s", "lost"}


@pytest.fixture(scope="module")
def campaign():
    arrivals = campaign_trace(0)
    return arrivals, run_policies(arrivals, PROD, cluster_model(PROD))


def test_on_the_campaign_spike_ours_costs_under_half_of_static_and_meets_the_deadline(campaign):
    _, results = campaign
    ours, static = results["deadline_aware"], results["static"]
    assert ours.cost <= 0.5 * static.cost, (ours.cost, static.cost)
    assert ours.within_15s >= 0.99 and ours.lost == 0


def test_ours_beats_rays_default_on_one_without_losing_on_the_other(campaign):
    _, results = campaign
    ours, ray = results["deadline_aware"], results["ray_default"]
    assert ours.cost <= ray.cost and ours.within_15s >= ray.within_15s
    assert ours.cost < ray.cost or ours.within_15s > ray.within_15s


def test_readme_shows_the_campaign_table_this_code_computes(campaign):
    _, results = campaign
    assert table(results, results["static"].cost) in (REPO / "README.md").read_text(encoding="utf-8")


def test_a_mistyped_policy_setting_is_refused_as_serve_would(tmp_path):
    broken = (REPO / "deploy" / "prod.yaml").read_text(encoding="utf-8").replace("utilisation:", "utilization:")
    (tmp_path / "prod.yaml").write_text(broken, encoding="utf-8")
    with pytest.raises(ConfigurationError, match="policy_kwargs: .*utilization"):
        read_generate_scaling(tmp_path / "prod.yaml")


def test_the_deploy_files_carry_the_simulators_recommendation(campaign):
    arrivals, _ = campaign
    params, result = recommend(arrivals, PROD, cluster_model(PROD))
    assert params == PROD.params, "re-run `wxassist simulate-scaling --recommend` and copy policy_kwargs"
    assert result.within_15s >= 0.99
    dev = read_generate_scaling(REPO / "deploy" / "dev.yaml")
    assert replace(dev.params, batch=params.batch) == params  # dev's smaller GPU batches 32


def test_the_campaign_trace_is_a_fifty_fold_spike_within_a_minute():
    rate = campaign_rate()
    assert rate(300) == 0.5 and rate(660) == pytest.approx(25.0)
    assert campaign_trace(0) == campaign_trace(0) != campaign_trace(1)
    assert 15_000 < len(campaign_trace(0)) < 20_000


def test_spot_preemptions_hand_work_back_and_lose_nothing():
    arrivals = campaign_trace(3)
    model = replace(cluster_model(PROD), spot_preemptions_per_hour=30.0, on_demand_base=0, min_replicas=2)
    result = simulate(arrivals, StaticPolicy(4), model)
    assert result.lost == 0 and result.answered == len(arrivals)
    # With no notice at all, what was in flight is answered again elsewhere: later, not lost.
    abrupt = simulate(arrivals, StaticPolicy(4), replace(model, preemption_notice_s=0.0))
    assert abrupt.lost == 0 and abrupt.within_15s <= result.within_15s


def test_static_pays_for_its_peak_all_the_time():
    arrivals = [float(t) for t in range(0, 3600, 10)]
    model = replace(ClusterModel(), spot_preemptions_per_hour=0.0, max_replicas=4, on_demand_base=4)
    result = simulate(arrivals, StaticPolicy(4), model)
    assert result.gpu_hours == pytest.approx(4 * 3660 / 3600, rel=0.02)
    assert result.cost == pytest.approx(result.gpu_hours * model.on_demand_usd_h)


def test_a_real_trace_is_read_from_csv(tmp_path):
    (tmp_path / "trace.csv").write_text("time,user\n100.5,a\n2026-11-21T10:00:00+00:00,b\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="trace.csv:3: not a time"):
        load_csv(tmp_path / "trace.csv")  # one file mixes seconds and ISO times: refused, named
    (tmp_path / "trace.csv").write_text("arrived\n2026-11-21T10:00:05+00:00\n2026-11-21T10:00:00+00:00\n",
                                        encoding="utf-8")
    assert load_csv(tmp_path / "trace.csv") == [0.0, 5.0]
    (tmp_path / "empty.csv").write_text("arrived\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="no arrivals"):
        load_trace(str(tmp_path / "empty.csv"))
    with pytest.raises(ConfigurationError, match="cannot read trace"):
        load_trace(str(tmp_path / "missing.csv"))


def test_simulate_scaling_prints_json_and_writes_the_plot(tmp_path, capsys):
    from serve_app import main

    trace = tmp_path / "burst.csv"
    trace.write_text("\n".join(str(i * 0.05) for i in range(2000)), encoding="utf-8")
    plot = tmp_path / "plot.png"
    assert main(["simulate-scaling", "--trace", str(trace), "--json", "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["policies"]) == {"static", "ray_default", "qps_target", "deadline_aware"}
    assert all(set(summary) == SUMMARY_KEYS for summary in report["policies"].values())
    assert report["messages"] == 2000
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["simulate-scaling", "--config", str(tmp_path / "none.yaml")]) == 2

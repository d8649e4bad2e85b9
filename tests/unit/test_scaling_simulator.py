"""The scaling simulator: what is claimed about the campaign trace, on seeds nothing was tuned
on and against baselines that are fair to the other side (the fewest static replicas that do
the job, Ray's default at its best target); the deploy files carrying the recommendation made
on the tuning seeds; costs that follow the stack; preemptions that lose nothing; traces; and
the `wxassist simulate-scaling` command.

The reported figures (docs/autoscaling.md) come from the full CLI run over held-out seeds
5-14; these tests take the first three of them, to stay quick."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from functions.common.errors import ConfigurationError
from functions.generate.scaling import compare as c
from functions.generate.scaling.baselines import StaticPolicy
from functions.generate.scaling.simulator import ClusterModel, simulate
from functions.generate.scaling.stack_prices import read_gpu_prices
from functions.generate.scaling.traces import campaign_rate, campaign_trace, load_csv, load_trace

REPO = Path(__file__).resolve().parents[2]
PROD = c.read_generate_scaling(REPO / "deploy" / "prod.yaml")
PRICES = read_gpu_prices(REPO / "infra" / "Pulumi.prod.yaml")
MODEL = c.cluster_model(PROD, PRICES)
SUMMARY_KEYS = {"gpu_hours", "cost", "passive_share", "within_15s", "lost"}
HELD_OUT = c.HELD_OUT_SEEDS[:3]


@pytest.fixture(scope="module")
def workload():
    return c.Workload("campaign")


@pytest.fixture(scope="module")
def tuned(workload):
    """What the CLI chooses on the tuning seeds: Ray's target and our utilisation."""
    ray_target, _ = c.tune_ray_target(workload, c.TUNING_SEEDS, PROD, MODEL)
    params, tuning = c.recommend(workload, c.TUNING_SEEDS, PROD, MODEL)
    return ray_target, params, tuning


@pytest.fixture(scope="module")
def held_out(workload, tuned):
    ray_target, _, _ = tuned
    return c.compare(workload, HELD_OUT, PROD, MODEL, ray_target)


def test_the_deploy_files_carry_the_recommendation_made_on_the_tuning_seeds(tuned):
    _, params, tuning = tuned
    assert params == PROD.params, "re-run `wxassist simulate-scaling --recommend` and copy policy_kwargs"
    assert c.meets(tuning.results)
    dev = c.read_generate_scaling(REPO / "deploy" / "dev.yaml")
    assert replace(dev.params, batch=params.batch) == params  # dev's smaller GPU batches 32


def test_tuning_and_reported_seeds_never_overlap():
    assert not set(c.TUNING_SEEDS) & set(c.HELD_OUT_SEEDS)


def test_on_held_out_seeds_ours_answers_99_percent_within_15_s_and_loses_nothing(held_out):
    ours = held_out["deadline_aware"]
    assert ours.worst("within_15s") >= c.REQUIRED_WITHIN_15S, ours.values("within_15s")
    assert ours.worst("lost") == 0


def test_the_prod_stacks_paid_base_alone_meets_the_deadline_so_no_policy_costs_less(held_out):
    # The campaign spike fits the two on-demand replicas the stack pays for anyway: the fewest
    # static replicas that do the job are that base, and its cost is every policy's floor.
    needed = held_out["static_needed"]
    assert {r.setting for r in needed.results} == {f"{PRICES.on_demand_base} replicas"}
    assert c.meets(needed.results)
    for name in c.POLICY_ORDER:
        assert held_out[name].mean("cost") >= needed.mean("cost") - 1e-9, name
    # Ours pays for the replicas it starts at the first sign of the burst: a little over the floor.
    assert held_out["deadline_aware"].mean("cost") <= 1.05 * needed.mean("cost")


def test_against_rays_default_at_its_best_target_ours_is_no_better(tuned, held_out):
    # Tuned on the tuning seeds, Ray's default never leaves the base on this trace: it meets the
    # deadline at the floor, which ours cannot beat; ours meets it too, for at most 5% more.
    ray_target, _, _ = tuned
    ours, ray = held_out["deadline_aware"], held_out["ray_default_tuned"]
    assert ray_target > PROD.params.batch  # past max_ongoing_requests: no scaling on this load
    assert c.meets(ray.results) and c.meets(ours.results)
    assert ray.mean("cost") <= ours.mean("cost") <= 1.05 * ray.mean("cost")


def test_static_peak_provisioning_pays_for_replicas_the_trace_never_needs(held_out):
    static, needed = held_out["static"], held_out["static_needed"]
    assert static.mean("cost") > 2 * needed.mean("cost")


def test_the_fewest_static_replicas_are_the_fewest_that_meet_the_deadline():
    arrivals = campaign_trace(5)
    model = replace(MODEL, min_replicas=1, on_demand_base=1, seed=5)
    needed = c.static_needed(arrivals, model)
    replicas = int(needed.setting.split()[0])
    assert c.meets([needed])
    fewer = simulate(arrivals, StaticPolicy(replicas - 1), model)
    assert not c.meets([fewer])


def test_when_answers_take_twice_as_long_as_assumed_not_even_peak_provisioning_meets_99_percent():
    # Lognormal answers of 8 s mean: over 1% of them alone take longer than 15 s.
    slow = replace(MODEL, service_s=2 * MODEL.service_s, seed=5)
    assert simulate(campaign_trace(5), StaticPolicy(MODEL.max_replicas), slow).within_15s < c.REQUIRED_WITHIN_15S


def test_a_choice_is_the_cheapest_that_meets_and_else_the_best_share():
    def runs(cost, share, lost=0):
        return c.Runs((replace(simulate([], StaticPolicy(1), MODEL), cost=cost, within_15s=share, lost=lost),))

    assert c.choose([("a", runs(3.0, 0.995)), ("b", runs(2.0, 0.99)), ("c", runs(1.0, 0.98))])[0] == "b"
    assert c.choose([("a", runs(1.0, 1.0, lost=1)), ("b", runs(2.0, 0.97)), ("c", runs(3.0, 0.98))])[0] == "a"
    assert c.choose([("b", runs(2.0, 0.97)), ("c", runs(3.0, 0.98))])[0] == "c"


def test_seeds_are_read_as_ranges_and_lists():
    assert c.parse_seeds("5-14") == tuple(range(5, 15))
    assert c.parse_seeds("7") == (7,) and c.parse_seeds("0,3,1-2,3") == (0, 3, 1, 2)
    for bad in ("5-", "a", "9-5", "-3"):
        with pytest.raises(ConfigurationError, match="seeds"):
            c.parse_seeds(bad)


def test_the_summary_is_the_mean_with_the_worst_seed_and_the_spread_beside_it():
    results = tuple(replace(simulate([], StaticPolicy(1), MODEL), cost=cost, within_15s=share, lost=lost)
                    for cost, share, lost in ((1.0, 1.0, 0), (3.0, 0.97, 2)))
    summary = c.Runs(results).summary()
    assert (summary["cost"], summary["cost_worst"], summary["cost_spread"]) == (2.0, 3.0, 2.0)
    assert (summary["within_15s"], summary["within_15s_worst"], summary["lost"], summary["lost_worst"]) == \
        (0.985, 0.97, 1.0, 2)


def test_a_mistyped_policy_setting_is_refused_as_serve_would(tmp_path):
    broken = (REPO / "deploy" / "prod.yaml").read_text(encoding="utf-8").replace("utilisation:", "utilization:")
    (tmp_path / "prod.yaml").write_text(broken, encoding="utf-8")
    with pytest.raises(ConfigurationError, match="policy_kwargs: .*utilization"):
        c.read_generate_scaling(tmp_path / "prod.yaml")


def test_the_campaign_trace_is_a_fifty_fold_spike_within_a_minute():
    rate = campaign_rate()
    assert rate(300) == 0.5 and rate(660) == pytest.approx(25.0)
    assert campaign_trace(0) == campaign_trace(0) != campaign_trace(1)
    assert 15_000 < len(campaign_trace(0)) < 20_000


def test_spot_preemptions_hand_work_back_and_lose_nothing():
    arrivals = campaign_trace(3)
    model = replace(MODEL, spot_preemptions_per_hour=30.0, on_demand_base=0, min_replicas=2, seed=3)
    result = simulate(arrivals, StaticPolicy(4), model)
    assert result.lost == 0 and result.answered == len(arrivals)
    # With no notice at all, what was in flight is answered again elsewhere: later, not lost.
    abrupt = simulate(arrivals, StaticPolicy(4), replace(model, preemption_notice_s=0.0))
    assert abrupt.lost == 0 and abrupt.within_15s <= result.within_15s


def test_static_pays_for_its_replicas_and_the_on_demand_base_for_its_nodes():
    arrivals = [float(t) for t in range(0, 3600, 10)]
    model = ClusterModel(on_demand_usd_h=2.0, spot_usd_h=0.5, on_demand_base=1, max_replicas=4,
                         spot_preemptions_per_hour=0.0)
    hours = 3660 / 3600  # the run lasts a minute past the last arrival
    four = simulate(arrivals, StaticPolicy(4), model)
    assert four.gpu_hours == pytest.approx(4 * hours, rel=0.02)
    assert four.cost == pytest.approx(hours * (2.0 + 3 * 0.5), rel=0.02)  # one on-demand, three spot
    # Three on-demand nodes kept by the stack are paid whether one replica runs or three.
    idle_base = simulate(arrivals, StaticPolicy(1), replace(model, on_demand_base=3))
    assert idle_base.gpu_hours == pytest.approx(3 * hours, rel=0.02)
    assert idle_base.cost == pytest.approx(3 * 2.0 * hours, rel=0.02)


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


def test_simulate_scaling_prints_json_priced_from_infra_and_writes_the_plot(tmp_path, capsys):
    from functions.cli.main import main

    trace = tmp_path / "burst.csv"
    trace.write_text("\n".join(str(i * 0.05) for i in range(2000)), encoding="utf-8")
    plot = tmp_path / "plot.png"
    assert main(["simulate-scaling", "--trace", str(trace), "--seeds", "3-4", "--tune-seeds", "0",
                 "--json", "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["policies"]) == list(c.POLICY_ORDER)
    for summary in report["policies"].values():
        assert SUMMARY_KEYS | {"cost_worst", "cost_spread", "within_15s_worst", "within_15s_spread"} <= set(summary)
        assert summary["seeds"] == 2
    assert (report["seeds"], report["tuning_seeds"], report["messages"]) == ([3, 4], [0], 2000)
    table = yaml.safe_load((REPO / "infra" / "instances.yaml").read_text(encoding="utf-8"))
    assert report["prices"]["on_demand_usd_h"] == \
        table["regions"][PRICES.region]["on_demand_usd_h"][PRICES.instance_type]
    assert report["prices"]["on_demand_base"] == PRICES.on_demand_base
    assert "instances.yaml" in report["prices"]["source"] and "Pulumi.prod.yaml" in report["prices"]["source"]
    assert "target_ongoing_requests" in report["tuned"]["ray_default_tuned"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_scaling_refuses_reporting_a_seed_it_tuned_on(tmp_path, capsys):
    from functions.cli.main import main

    assert main(["simulate-scaling", "--seeds", "3-6", "--tune-seeds", "0-3"]) == 2
    assert "overlap" in capsys.readouterr().err
    assert main(["simulate-scaling", "--config", str(tmp_path / "none.yaml")]) == 2

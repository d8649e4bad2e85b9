"""The Grafana dashboard and the alert rules are valid PromQL over metrics wxassist exports:
a renamed metric must not leave a dashboard panel or an alert silently empty."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import pytest
import yaml

from observability import metrics

OBSERVABILITY = Path(__file__).resolve().parents[2] / "observability"
METRIC = re.compile(r"\bwxassist_[a-z_]+\b")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every sample name the registries can export, series or not yet."""
    families = [*metrics.REGISTRY.collect(), *metrics.SCRAPE_REGISTRY.collect()]
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def alert_rules() -> list[dict]:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in rules["groups"] for rule in group["rules"]]


@pytest.mark.parametrize(("where", "expr"), dashboard_queries() + [(r["alert"], r["expr"]) for r in alert_rules()])
def test_every_query_parses_and_names_only_exported_metrics(where, expr):
    promql_parser.parse(expr)  # raises ValueError on a syntax error
    names = set(METRIC.findall(expr))
    assert names, where
    assert names <= exported_names(), f"{where}: {names - exported_names()}"


def test_the_alerts_cover_what_an_operator_is_paged_for():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
    expressions = " ".join(rule["expr"] for rule in rules.values())
    for metric in ("wxassist_deadline_misses_total", "wxassist_outbox_backlog", "wxassist_generate_queue_depth"):
        assert metric in expressions
    assert 'outcome="error"' in expressions  # the error rate


def test_a_bucket_the_dashboard_reads_exists():
    """'Answered inside the 5 s window' reads the le="5.0" bucket: it must be a bucket."""
    assert 5.0 in metrics.ANSWER_BUCKETS_S
    assert any('le="5.0"' in expr for _, expr in dashboard_queries())

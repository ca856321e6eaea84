"""Alerts, dashboard and example queries only read series that really exist.

The runtime's series come from a real `RuntimeMetrics` registry (its types decide the
`_total`/`_bucket` suffixes); GPU gauges, exported only with NVML, from metric_names.py.
Besides those, the rules read these kube-state-metrics series, named here on purpose.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from voicefleet_runtime import metric_names
from voicefleet_runtime.metrics import RuntimeMetrics

KUBE_STATE_METRICS = {
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_deployment_status_replicas_available",
}
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
    # aggregations may put their `by (...)` before the parenthesis
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
}  # fmt: skip
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$namespace": ".*",
    "$service": ".*",
}


def runtime_series() -> set[str]:
    registry = RuntimeMetrics(concurrency=1, queue_size=1, gpu=False).registry
    series: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            series.add(f"{family.name}_total")
        elif family.type == "histogram":
            series.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        else:
            series.add(family.name)
    series.update(
        {metric_names.GPU_UTILIZATION, metric_names.GPU_MEMORY_USED, metric_names.GPU_MEMORY_TOTAL}
    )
    return series


def metric_names_in(expr: str) -> set[str]:
    """The series an expression selects: identifiers that are not functions or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    text = re.sub(r"#[^\n]*", "", text)  # comments
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text
    )  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        word, is_call = match.group(1), match.group(2)
        if not is_call and word.lower() not in PROMQL_WORDS:
            names.add(word)
    return names


def alert_expressions(render: Any) -> list[str]:
    (rule,) = [
        o
        for o in render({"monitoring": {"prometheusRule": {"enabled": True}}})
        if o["kind"] == "PrometheusRule"
    ]
    return [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard(chart_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((chart_dir / "files" / "dashboard.json").read_text())
    return loaded


def dashboard_expressions(chart_dir: Path) -> list[str]:
    return [t["expr"] for panel in dashboard(chart_dir)["panels"] for t in panel["targets"]]


def example_expressions(repo_root: Path) -> list[str]:
    expressions = []
    for path in sorted((repo_root / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            prometheus = doc["spec"]["autoscaling"].get("metrics", {}).get("prometheus", {})
            expressions += [v for k, v in prometheus.items() if k.endswith("Query")]
    return expressions


def test_the_name_extractor_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (service, le) (rate(a_bucket{x="b c", le!="1"}[5m])))'
        " / on (namespace) group_left () max without (pod) (b_total offset 5m) > 1 and c"
        "  # a comment naming no_series\n"
    )
    assert metric_names_in(expr) == {"a_bucket", "b_total", "c"}


def test_every_series_read_exists(render: Any, chart_dir: Path, repo_root: Path) -> None:
    known = runtime_series() | KUBE_STATE_METRICS
    expressions = (
        alert_expressions(render)
        + dashboard_expressions(chart_dir)
        + example_expressions(repo_root)
    )
    assert len(expressions) > 10
    for expr in expressions:
        unknown = metric_names_in(expr) - known
        assert not unknown, f"{expr!r} reads series nobody exports: {unknown}"


def test_the_dashboard_covers_the_fleet(chart_dir: Path) -> None:
    board = dashboard(chart_dir)
    assert board["uid"] == "voicefleet-fleet"
    assert board["title"]
    read = set().union(*(metric_names_in(e) for e in dashboard_expressions(chart_dir)))
    for series in (
        f"{metric_names.QUEUE_DEPTH}",
        f"{metric_names.REQUEST_DURATION}_bucket",
        f"{metric_names.REAL_TIME_FACTOR}_bucket",
        metric_names.READY,
        metric_names.GPU_UTILIZATION,
        metric_names.GPU_MEMORY_USED,
    ):
        assert series in read, f"no panel shows {series}"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))


def test_promtool_parses_every_dashboard_query(chart_dir: Path, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: apt-get install -y --no-install-recommends prometheus")
    rules = []
    for index, expr in enumerate(dashboard_expressions(chart_dir)):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"voicefleet:dashboard_query_{index}", "expr": expr})
    rules_file = tmp_path / "dashboard_rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_configmap_carries_the_json(render: Any, chart_dir: Path) -> None:
    values = {"monitoring": {"grafanaDashboard": {"enabled": True}}}
    (config_map,) = [o for o in render(values) if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    assert json.loads(text) == dashboard(chart_dir)

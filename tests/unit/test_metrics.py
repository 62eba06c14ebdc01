"""The metrics' rendering and bounds, and the Grafana dashboard and alert rules in docs/:
valid files that name only metrics Stoker exports."""

from __future__ import annotations

import json
import re

import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from stoker._sdk.worker.health import METRIC_NAMES as WORKER_METRICS
from stoker._sdk.worker.health import WorkerStats
from stoker.engine import metrics
from stoker.engine.metrics.gauges import GAUGE_NAMES
from tests.harness import REPO

DOCS = REPO / "docs"


def exported() -> set[str]:
    """Every sample name the engine and the workers can export."""
    names = set(GAUGE_NAMES) | set(WORKER_METRICS)
    for m in metrics.TASK_METRICS:
        if isinstance(m, metrics.TaskCounter):
            names.add(m.name)
        else:
            names |= {m.name + s for s in ("_bucket", "_count", "_sum")}
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


def used(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in re.findall(r"\bstoker_[a-z_]+", e)}


def test_the_grafana_dashboard_is_valid_and_names_existing_metrics() -> None:
    dash = json.loads((DOCS / "grafana" / "stoker-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    assert len(exprs) > 10
    names = used(exprs)
    assert names, "the dashboard queries no Stoker metric"
    assert names <= exported(), f"unknown metrics: {sorted(names - exported())}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_the_alert_rules_are_valid_and_name_existing_metrics() -> None:
    rules = yaml.safe_load((DOCS / "prometheus" / "stoker-alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert all({"alert", "expr", "labels", "annotations"} <= set(r) for r in alerts)
    names = used([r["expr"] for r in alerts])
    assert names <= exported(), f"unknown metrics: {sorted(names - exported())}"
    assert {"stoker_queue_oldest_age_seconds", "stoker_runs_failed_total"} <= names


def test_counter_labels_are_bounded() -> None:
    series = metrics._Series(2)
    assert series.labels(1, "a") == ("1", "a")
    assert series.labels(1, "b") == ("1", "b")
    assert series.labels(1, "c") == ("1", metrics.OTHER)
    assert series.labels(1, "a") == ("1", "a")  # already labelled: keeps its label
    assert series.text[("1", metrics.OTHER)] == 'tenant="1",task="_other"'


def test_task_instruments_render_what_the_parser_reads() -> None:
    name = 'render "me"\nnow'
    metrics.created(998, [name, name])
    metrics.started(998, name, 0.3)
    metrics.started(998, name, 7.0)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render(998))}
    (created,) = families["stoker_runs_created"].samples
    assert created.labels == {"tenant": "998", "task": name} and created.value == 2
    wait = {
        s.labels.get("le", s.name): s.value for s in families["stoker_queue_wait_seconds"].samples
    }
    assert wait["0.25"] == 0 and wait["0.5"] == 1 and wait["10.0"] == 2 and wait["+Inf"] == 2
    assert wait["stoker_queue_wait_seconds_count"] == 2
    assert wait["stoker_queue_wait_seconds_sum"] == 7.3
    # Another tenant's view has none of it.
    assert "998" not in metrics.render(997)


def test_outcomes_count_by_kind_and_retry() -> None:
    by_name = {m.name: m for m in metrics.TASK_METRICS if isinstance(m, metrics.TaskCounter)}

    def value(counter: str, task: str) -> float:
        return by_name[counter].value(999, task)

    row = {"tenant_id": 999, "task_name": "unit_outcomes", "run_s": 0.5}
    before = {
        c: value(c, "unit_outcomes")
        for c in (
            "stoker_attempts_timed_out_total",
            "stoker_attempts_retried_total",
            "stoker_runs_failed_total",
            "stoker_attempts_requeued_total",
        )
    }
    metrics.ended(
        [
            {**row, "kind": "TIMED_OUT", "status": "QUEUED"},
            {**row, "kind": "FAILED", "status": "FAILED"},
            {**row, "kind": "WORKER_LOST", "status": "QUEUED"},
        ]
    )
    after = {c: value(c, "unit_outcomes") - v for c, v in before.items()}
    assert after == {
        "stoker_attempts_timed_out_total": 1,
        "stoker_attempts_retried_total": 1,
        "stoker_runs_failed_total": 1,
        "stoker_attempts_requeued_total": 1,
    }


def test_worker_stats_count_per_task_and_outcome() -> None:
    stats = WorkerStats()
    stats.start("a")
    stats.start("a")
    stats.finish("a", "completed")
    stats.finish("a", "failed")
    assert stats.started == {"a": 2}
    assert stats.finished == {("a", "completed"): 1, ("a", "failed"): 1}


def test_engine_spans_go_to_the_global_provider_once_one_is_set() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from stoker.engine import tracing

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)  # the engine's tracer was made before: it follows
    with tracing.span("stoker.scheduler.round", tenant_id=7):
        pass
    (span,) = memory.get_finished_spans()
    assert span.name == "stoker.scheduler.round"
    assert dict(span.attributes or {}) == {"stoker.tenant_id": 7}

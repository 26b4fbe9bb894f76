"""The files in deploy/: the Grafana dashboard, the Prometheus scrape config, the systemd unit."""

from __future__ import annotations

import configparser
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from sse.config import Config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"

# What the server exports on --metrics-listen (README "Metrics"); the dashboard may use no other.
METRICS = {
    "ssechat_streams_open",
    "ssechat_streams_opened_total",
    "ssechat_streams_closed_total",
    "ssechat_stream_lifetime_seconds",
    "ssechat_events_published_total",
    "ssechat_events_sent_total",
    "ssechat_sent_bytes_total",
    "ssechat_publish_fanout_seconds",
    "ssechat_resumes_total",
    "ssechat_http_requests_total",
    "ssechat_http_request_duration_seconds",
    "ssechat_generations_total",
    "ssechat_generation_first_token_seconds",
    "ssechat_generation_duration_seconds",
    "ssechat_model_tokens_total",
    "ssechat_rate_limited_total",
    "ssechat_auth_failures_total",
    "ssechat_broker_up",
    "ssechat_build_info",
}
HISTOGRAMS = {
    "ssechat_stream_lifetime_seconds",
    "ssechat_publish_fanout_seconds",
    "ssechat_http_request_duration_seconds",
    "ssechat_generation_first_token_seconds",
    "ssechat_generation_duration_seconds",
}
_NAME = re.compile(r"\bssechat_[a-z_]+")


def _metric(name: str) -> str:
    """The exported metric a series name belongs to (histograms add _bucket, _sum, _count)."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in HISTOGRAMS:
            return base
    return name


def _dashboard() -> dict[str, Any]:
    payload = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert isinstance(payload, dict)
    return payload


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]


def test_dashboard_uses_only_exported_metrics() -> None:
    used = {_metric(name) for expr in _exprs(_dashboard()) for name in _NAME.findall(expr)}
    assert used, "no ssechat_ metric in the dashboard"
    assert used - METRICS == set()


def test_dashboard_shows_every_panel_the_operator_needs() -> None:
    exprs = " ".join(_exprs(_dashboard()))
    for needed in (
        "ssechat_streams_open",
        "ssechat_streams_closed_total",
        "ssechat_stream_lifetime_seconds_bucket",
        "ssechat_events_published_total",
        "ssechat_events_sent_total",
        "ssechat_sent_bytes_total",
        "histogram_quantile(0.99, sum by (le) (rate(ssechat_publish_fanout_seconds_bucket",
        "ssechat_http_requests_total",
        "ssechat_http_request_duration_seconds_bucket",
        "ssechat_rate_limited_total",
        "ssechat_auth_failures_total",
        "ssechat_generations_total",
        "histogram_quantile(0.95, sum by (le, model) (rate(ssechat_generation_first_token",
        "ssechat_model_tokens_total",
        "ssechat_broker_up",
    ):
        assert needed in exprs, needed


def test_dashboard_is_a_grafana_dashboard_with_a_datasource_variable() -> None:
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels), "panel ids repeat"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]


def _yaml_lines(text: str) -> list[tuple[int, str]]:
    """(indent, content) of each line that is not blank or a comment."""
    out = []
    for raw in text.splitlines():
        stripped = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if stripped:
            out.append((len(raw) - len(raw.lstrip(" ")), stripped.strip()))
    return out


def test_prometheus_scrapes_the_metrics_address_every_15_s() -> None:
    # PyYAML is no dependency: a line-based reading of the few keys that matter.
    text = (DEPLOY / "prometheus.yml").read_text()
    assert "\t" not in text, "YAML forbids tabs for indentation"
    lines = _yaml_lines(text)
    for indent, content in lines:
        assert indent % 2 == 0, content
        assert re.fullmatch(r"(- )?[a-z_]+:( .+)?|- \"[^\"]+\"", content), content
    contents = [content for _, content in lines]
    assert "scrape_interval: 15s" in contents
    assert "- job_name: ssechat" in contents
    assert "metrics_path: /metrics" in contents
    targets = [c for c in contents if re.fullmatch(r'- "[0-9.]+:[0-9]+"', c)]
    assert targets == ['- "127.0.0.1:9464"']
    assert "--workers" in text, "the comment on --workers is missing"


def _unit() -> configparser.ConfigParser:
    # systemd units are INI-like: repeated keys are allowed (strict=False), case matters.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    parser.read_string((DEPLOY / "ssechat.service").read_text())
    return parser


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("User", "ssechat"),
        ("ExecStart", "/opt/ssechat/venv/bin/ssechat"),
        ("EnvironmentFile", "/etc/ssechat/env"),
        ("WorkingDirectory", "/var/lib/ssechat"),
        ("StateDirectory", "ssechat"),
        ("Restart", "on-failure"),
        ("LimitNOFILE", "65536"),
        ("NoNewPrivileges", "true"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "true"),
        ("PrivateTmp", "true"),
        ("ReadWritePaths", "/var/lib/ssechat"),
        ("KillSignal", "SIGTERM"),
    ],
)
def test_unit_is_hardened(key: str, value: str) -> None:
    assert _unit()["Service"][key] == value


def test_unit_waits_longer_than_the_shutdown_timeout() -> None:
    env = (DEPLOY / "env.example").read_text()
    shutdown_s = float(re.search(r"^SSECHAT_SHUTDOWN_TIMEOUT=(\S+)", env, re.M)[1])  # type: ignore[index]
    stop = _unit()["Service"]["TimeoutStopSec"]
    assert float(stop.removesuffix("s")) > shutdown_s
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def test_env_example_names_real_options() -> None:
    known = {
        f.metadata["option"].env_var for f in dataclasses.fields(Config) if "option" in f.metadata
    }
    # --metrics-listen comes with the metrics work, in parallel with this file.
    known.add("SSECHAT_METRICS_LISTEN")
    text = (DEPLOY / "env.example").read_text()
    names = set(re.findall(r"^#?(SSECHAT_[A-Z_]+)=", text, re.M))
    assert "SSECHAT_SESSION_SECRET" in names
    assert names - known == set()

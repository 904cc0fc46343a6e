"""Tracking URIs: an unreachable server is said in seconds, before MLflow is imported."""

from __future__ import annotations

import socket

from vram_ml.tracking_uri import sqlite_path, unreachable_reason


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again on exit: nothing listens there


def test_a_closed_port_is_not_reachable_and_a_listening_one_is(monkeypatch):
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    assert unreachable_reason(f"http://127.0.0.1:{closed_port()}") == (
        "not reachable (Connection refused)")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert unreachable_reason(f"http://127.0.0.1:{server.getsockname()[1]}") == ""


def test_only_http_servers_are_probed_and_proxies_are_left_to_mlflow(monkeypatch):
    assert unreachable_reason("sqlite:////tmp/nowhere/mlflow.db") == ""
    assert unreachable_reason("databricks") == ""
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert unreachable_reason(f"http://10.0.0.1:{closed_port()}") == ""
    assert sqlite_path("sqlite:////tmp/x/mlflow.db").as_posix() == "/tmp/x/mlflow.db"
    assert sqlite_path("http://host:5000") is None

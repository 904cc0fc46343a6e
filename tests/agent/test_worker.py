"""Isolation: whatever the child does (crash, hang, abort), the parent gets one answer."""

from __future__ import annotations

import os
import threading
import time

from vram_ml.agent.worker import Children, Slot, measure_isolated
from vram_ml.spec import build_spec


def test_crash_timeout_and_stub(tmp_path, tiny_specs, hooks):
    crash, hang, stub = (build_spec(**s) for s in tiny_specs)
    hooks({crash.spec_id: "exit:3", hang.spec_id: "sleep:60", stub.spec_id: "stub"})
    slot = Slot("cpu")
    crashed = measure_isolated(crash, slot, tmp_path)
    assert crashed.measurement.status == "error"
    assert crashed.measurement.message.startswith("worker exited with code 3")
    assert crashed.provenance.backend == "cpu" and crashed.provenance.torch_version
    start = time.monotonic()
    hung = measure_isolated(hang, slot, tmp_path, timeout_s=2)
    assert time.monotonic() - start < 15
    assert hung.measurement.status == "error" and "timeout" in hung.measurement.message
    ok = measure_isolated(stub, slot, tmp_path)
    assert ok.measurement.status == "ok" and ok.measurement.peak_vram_bytes == 2048
    assert (tmp_path / f"{crash.spec_id}.log").exists()
    assert not list(tmp_path.glob("*.result.json")) and not list(tmp_path.glob("cpu0-*.log"))


def test_abort_returns_no_sample_and_kills_the_child(tmp_path, tiny_specs, hooks):
    spec = build_spec(**tiny_specs[0])
    hooks({"*": "sleep:60"})
    abort, pids = threading.Event(), []
    threading.Timer(1.0, abort.set).start()
    assert measure_isolated(spec, Slot("cpu"), tmp_path, abort=abort, on_start=pids.append) is None
    try:
        os.kill(pids[0], 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


def test_warm_children_are_reused_and_closed(tmp_path, tiny_specs, hooks):
    hooks({"*": "stub"})
    children = Children(Slot("cpu"), tmp_path, warm=True)
    first = measure_isolated(build_spec(**tiny_specs[0]), Slot("cpu"), tmp_path,
                             children=children)
    warm = children._next[0]
    second = measure_isolated(build_spec(**tiny_specs[1]), Slot("cpu"), tmp_path,
                              children=children, warm_next=False)
    assert first.measurement.status == second.measurement.status == "ok"
    assert warm.returncode == 0  # the warm child measured the second spec
    assert children._next is None
    children.close()

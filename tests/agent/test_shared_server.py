"""Many agents, one tracking server: agents with their own stores (as on separate machines) run
one plan at the same time against PostgreSQL + `mlflow server` (scripts/tracking_server.sh).

Checked: every spec is in the exported dataset exactly once, the server holds exactly one finished
run per sample_key and no leftover claim, and thanks to the claims no spec was measured twice.
A few specs train for real (tiny models); the rest use the child's `stub` hook for speed.
"""

from __future__ import annotations

import pytest

from vram_ml.spec import build_spec


def shared_plan(tiny_specs: list[dict], real: int, stubs: int) -> tuple[list[dict], dict]:
    """`real` specs measured by the real recipe + `stubs` quick ones; (specs, hooks)."""
    real_specs = [{**tiny_specs[n % 3], "seq_len": 16 * (1 + n // 3)} for n in range(real)]
    stub_specs = [{**tiny_specs[1], "batch_size": b} for b in range(2, 2 + stubs)]
    hooks = {build_spec(**s).spec_id: "sleep:0.3;stub" for s in stub_specs}
    return real_specs + stub_specs, hooks


def run_together(agents, tmp_path, write_plan, specs, hooks, count: int, *extra: str):
    plan = write_plan(specs)
    started = [agents.start(tmp_path / f"store{n}", plan, hooks, "--steps", "2", *extra)
               for n in range(count)]
    return [agents.finish(agent, timeout_s=300) for agent in started]


def check_exactly_once(agents, specs: list[dict], summaries: list[dict]) -> dict[str, int]:
    """The done-when checks; returns the exported spec_id counts."""
    ids = {build_spec(**s).spec_id for s in specs}
    exported = agents.exported()
    assert exported == {spec_id: 1 for spec_id in ids}, exported
    state = agents.server_state()
    assert sorted(state["finished"].values()) == [1] * len(ids), state
    assert state["unfinished"] == 0 and state["active_claims"] == [], state
    for summary in summaries:  # each agent measured or skipped every spec it planned
        assert summary["planned"] == summary["stored"] + summary["claimed_elsewhere"], summary
    return exported


def agents_scenario(agents, tmp_path, write_plan, tiny_specs, figure, name: str, count: int,
                    real: int, stubs: int, *extra: str) -> None:
    specs, hooks = shared_plan(tiny_specs, real, stubs)
    results = run_together(agents, tmp_path, write_plan, specs, hooks, count, *extra)
    assert [code for code, _ in results] == [0] * count, results
    summaries = [summary for _, summary in results]
    assert all(s["tracking_error"] == "" for s in summaries), summaries
    exported = check_exactly_once(agents, specs, summaries)
    measured = sum(s["stored"] for s in summaries)
    assert measured == len(specs)  # claims: nobody measured a spec another agent had
    assert sum(s["status"]["ok"] for s in summaries) == len(specs)
    figure(name, faults=0, expected=len(specs), stored=len(exported),
           duplicates=sum(exported.values()) - len(exported), agents=count,
           measured=measured, skipped=sum(s["claimed_elsewhere"] for s in summaries))


def test_two_agents_share_one_plan(agents, tmp_path, write_plan, tiny_specs, figure):
    agents_scenario(agents, tmp_path, write_plan, tiny_specs, figure,
                    "2 agents, one plan (3 real + 5 stub)", 2, 3, 5)
    real_rows = agents.cli("dataset", "export", "--source", "mlflow", "--include-backend",
                           "cpu", "--output", str(tmp_path / "real.csv"), "--store",
                           str(tmp_path / "fresh-real"))
    assert real_rows[0] == 0, real_rows[1]
    text = (tmp_path / "real.csv").read_text()
    assert text.count("test hook: stub") == 5  # the other 3 rows come from real trainings


@pytest.mark.slow
def test_three_agents_two_workers_each(agents, tmp_path, write_plan, tiny_specs, figure):
    agents_scenario(agents, tmp_path, write_plan, tiny_specs, figure,
                    "3 agents x 2 workers (6 real + 14 stub)", 3, 6, 14, "--workers", "2")

"""The claim protocol (agent/claims.py): one winner per claim and per publish marker, leases that
run out, dead claimants taken over, a crash mid-logging repaired only by the marker's owner; and
races between many agents on the real tracking server: one claim winner, one finished run."""

from __future__ import annotations

import os
import threading
from dataclasses import replace

import pytest

from vram_ml.agent import claims
from vram_ml.agent.claims import Identity
from vram_ml.agent.tracking import Tracking, sample_to_run


@pytest.fixture
def sample(tiny_specs, make_sample):
    return make_sample(tiny_specs[0])


def tracking(uri: str, experiment: str = "claims-test", name: str = "a", pid: int | None = None,
             host: str = "host-a") -> Tracking:
    return Tracking(uri, experiment, identity=Identity(f"store-{name}", host, pid or os.getpid()))


@pytest.fixture
def uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


def test_one_winner_then_skips_and_release(uri, sample):
    a, b = tracking(uri, name="a"), tracking(uri, name="b", host="host-b", pid=4242)
    won = a.claim(sample.sample_key, lease_s=600)
    lost = b.claim(sample.sample_key, lease_s=600)
    assert won.won and not lost.won and lost.reason == f"claimed by host-a pid {os.getpid()}"
    a.release(won)
    again = b.claim(sample.sample_key, lease_s=600)  # released: free for anyone
    assert again.won


def test_an_expired_lease_is_taken_over_once(uri, sample):
    a = tracking(uri, name="a")
    b, c = tracking(uri, name="b", host="host-b"), tracking(uri, name="c", host="host-c")
    assert a.claim(sample.sample_key, lease_s=0).won  # expires at once
    taken = b.claim(sample.sample_key, lease_s=600)
    assert taken.won
    assert not c.claim(sample.sample_key, lease_s=600).won  # generation 1 is b's


def test_a_dead_process_of_the_same_store_is_taken_over_at_once(uri, sample):
    dead = subprocess_pid_that_exited()
    earlier = tracking(uri, name="a", pid=dead)
    assert earlier.claim(sample.sample_key, lease_s=600).won
    other_store = tracking(uri, name="b", host="host-a")
    assert not other_store.claim(sample.sample_key, lease_s=600).won  # not its own: waits
    live_sibling = tracking(uri, name="a", pid=os.getppid())  # same store, a live process
    assert live_sibling.claim(sample.sample_key, lease_s=600).won


def subprocess_pid_that_exited() -> int:
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def test_publishing_is_once_and_claims_see_it(uri, sample):
    a, b = tracking(uri, name="a"), tracking(uri, name="b", host="host-b")
    first = a.log(sample)
    assert first.outcome == "logged" and first.run_id
    assert a.log(sample) == replace(first, outcome="present")
    assert b.log(sample) == replace(first, outcome="present")
    lost = b.claim(sample.sample_key, lease_s=600)
    assert not lost.won and lost.reason == "already stored by an agent"
    assert len(a.finished_runs()) == 1


def test_a_crash_mid_logging_is_repaired_by_the_owner_only(uri, sample):
    owner, other = tracking(uri, name="owner"), tracking(uri, name="other", host="host-b")
    client, experiment_id = owner._connect()
    mine, _, _ = claims.win_marker(client, owner.experiment, sample.sample_key, owner.identity)
    assert mine
    crashed = client.create_run(experiment_id, tags=sample_to_run(sample)[2]).info.run_id
    assert other.log(sample).outcome == "elsewhere"  # not its sample to log
    assert other.finished_runs() == []
    repaired = owner.log(sample)
    assert repaired.outcome == "logged" and repaired.run_id != crashed
    assert client.get_run(crashed).info.lifecycle_stage == "deleted"
    assert [run.info.run_id for run in owner.finished_runs()] == [repaired.run_id]


def test_leftover_claims_of_ended_processes_are_released(uri, sample, make_sample, tiny_specs):
    dead = subprocess_pid_that_exited()
    ended = tracking(uri, name="a", pid=dead)
    assert ended.claim(sample.sample_key, lease_s=600).won
    other = make_sample(tiny_specs[1])
    stranger = tracking(uri, name="b", host="host-b", pid=dead)
    assert stranger.claim(other.sample_key, lease_s=600).won
    assert tracking(uri, name="a").release_leftovers() == 1  # its own store's only
    client, _ = ended._connect()
    names = [e.name for e in client.search_experiments(filter_string="name LIKE 'claims-test/%'")]
    assert len(names) == 1 and claims.short_key(other.sample_key) in names[0]


def race(count: int, work) -> list:
    barrier, results = threading.Barrier(count), [None] * count

    def run(index: int) -> None:
        barrier.wait()
        results[index] = work(index)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_races_on_the_tracking_server(tracking_server, sample, figure):
    experiment = tracking_server.experiment()
    agents = [tracking(tracking_server.uri, experiment, name=f"s{n}", host=f"h{n}")
              for n in range(8)]
    for agent in agents:
        agent.check()  # connected (and the experiment exists) before the race starts
    won = race(8, lambda n: agents[n].claim(sample.sample_key, lease_s=600).won)
    assert sum(won) == 1
    outcomes = race(8, lambda n: agents[n].log(sample).outcome)
    assert outcomes.count("logged") == 1, outcomes
    assert set(outcomes) <= {"logged", "present", "elsewhere"}
    runs = agents[0].finished_runs()
    assert len(runs) == 1
    figure("8 agents race to claim and log one sample", faults=0, expected=1, stored=len(runs),
           duplicates=len(runs) - 1, claim_winners=sum(won))

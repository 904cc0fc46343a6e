"""Claims: how agents on many machines share one plan through one MLflow tracking server.

The only atomic operation a tracking server offers is the one its database enforces: an experiment
name is unique (creating a name that exists, even as a deleted experiment, fails with
RESOURCE_ALREADY_EXISTS). Both steps below are such a create; whoever's create succeeds has won.

- **Claim** (before measuring; avoids measuring a spec twice): `<experiment>/claim/<key>/<gen>`,
  created with tags naming the agent (its store's `agent_id`), host, pid and lease. The winner
  measures; the others skip the spec. A claim is taken over, by creating generation `gen + 1` (one
  winner again), when its lease has run out (claimant dead or stuck) or when its claimant was this
  very store on this host and that process is gone (an agent restarted after SIGKILL). Released
  (deleted) once the sample is stored or aborted.
- **Publish marker** (storing; makes "never stored twice" hold even without claims, e.g. when two
  agents measured the same spec while the server was down): `<experiment>/sample/<key>`, created
  with its owner's `agent_id`. Only the owner ever creates a run for that key, under its store's
  file lock, after deleting its own unfinished runs and only when no finished run exists: so the
  experiment holds at most one finished run per sample_key. Hidden (deleted) once its run is
  finished; a deleted name stays reserved. An owner that dies between creating the marker and
  finishing the run (a few requests) still has the sample in its spool: its next `agent run` or
  `agent sync` finishes the job (other agents see "being logged elsewhere" meanwhile).

`key` is the sample_key made short and name-safe: spec_id + a hash of the device key.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vram_ml.agent.environment import host_name

OWNER_TAG, HOST_TAG, PID_TAG, LEASE_TAG = "vram_ml.owner", "vram_ml.host", "vram_ml.pid", \
    "vram_ml.lease_s"
AGENT_ID_NAME = "agent_id"
MAX_GENERATIONS = 1000


@dataclass(frozen=True)
class Identity:
    """Who claims and publishes: the store (`agent_id`, kept in the store folder), host and pid."""

    agent_id: str
    host: str
    pid: int

    def tags(self, **extra: Any) -> dict[str, str]:
        return {OWNER_TAG: self.agent_id, HOST_TAG: self.host, PID_TAG: str(self.pid),
                **{key: str(value) for key, value in extra.items()}}

    def owns(self, tags: dict[str, str]) -> bool:
        """Created by this store (any of its processes, past or present)."""
        return tags.get(OWNER_TAG) == self.agent_id

    def is_this_process(self, tags: dict[str, str]) -> bool:
        return self.owns(tags) and tags.get(HOST_TAG) == self.host \
            and tags.get(PID_TAG) == str(self.pid)

    def is_dead_process_of_this_store(self, tags: dict[str, str]) -> bool:
        """Claimed by an earlier process of this store on this host that no longer runs."""
        if not self.owns(tags) or tags.get(HOST_TAG) != self.host:
            return False
        try:
            os.kill(int(tags.get(PID_TAG, "")), 0)
        except ProcessLookupError:
            return True
        except (ValueError, PermissionError):
            return False
        return False


def load_identity(store_dir: Path) -> Identity:
    """This store's identity; `<store>/agent_id` is created once (atomically) and kept."""
    store_dir = Path(store_dir)
    path = store_dir / AGENT_ID_NAME
    if not path.exists():
        store_dir.mkdir(parents=True, exist_ok=True)
        temporary = store_dir / f".{AGENT_ID_NAME}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        temporary.write_text(uuid.uuid4().hex + "\n")
        try:
            os.link(temporary, path)  # fails if another process got there first: theirs wins
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
    return Identity(path.read_text().strip(), host_name(), os.getpid())


def ephemeral_identity() -> Identity:
    """An identity for a Tracking used without a store (tests, one-off scripts)."""
    return Identity(uuid.uuid4().hex, host_name(), os.getpid())


def short_key(sample_key: str) -> str:
    """`<spec_id>-<12 hex of the device key's sha256>`: safe in an experiment name."""
    spec_id, _, device_key = sample_key.partition("|")
    return f"{spec_id}-{hashlib.sha256(device_key.encode()).hexdigest()[:12]}"


def claim_name(experiment: str, key: str, generation: int) -> str:
    return f"{experiment}/claim/{key}/{generation}"


def marker_name(experiment: str, key: str) -> str:
    return f"{experiment}/sample/{key}"


@dataclass
class Claim:
    """The outcome of claiming one sample_key: won (measure it) or not (and why)."""

    key: str
    won: bool
    experiment_id: str = ""
    reason: str = ""


def _already_exists(error: Exception) -> bool:
    return getattr(error, "error_code", "") == "RESOURCE_ALREADY_EXISTS"


def create_unique(client: Any, name: str, tags: dict[str, str], location: str | None
                  ) -> str | None:
    """Create experiment `name`; its id, or None when the name exists (someone else won)."""
    try:
        return client.create_experiment(name, location, tags)
    except Exception as error:
        if _already_exists(error):
            return None
        raise


def claim(client: Any, experiment: str, sample_key: str, identity: Identity, lease_s: float,
          location: str | None = None) -> Claim:
    """Claim `sample_key` for measuring (see the module docstring)."""
    key = short_key(sample_key)
    if client.get_experiment_by_name(marker_name(experiment, key)) is not None:
        return Claim(key, False, reason="already stored by an agent")
    generation, vanished = 0, 0
    while generation < MAX_GENERATIONS:
        name = claim_name(experiment, key, generation)
        created = create_unique(client, name, identity.tags(**{LEASE_TAG: lease_s}), location)
        if created is not None:
            return Claim(key, True, created)
        held = client.get_experiment_by_name(name)
        if held is None:  # removed for good between our create and this read: try it again
            vanished += 1
            if vanished > 3:
                raise RuntimeError(f"claim {name}: neither created nor found")
            continue
        if held.lifecycle_stage == "deleted" or _stale(held, identity):
            generation += 1  # released, or taken over at the next generation
            continue
        if identity.is_this_process(held.tags):
            return Claim(key, True, held.experiment_id)  # our create, answered late and retried
        return Claim(key, False, reason=f"claimed by {held.tags.get(HOST_TAG, '?')} pid "
                                        f"{held.tags.get(PID_TAG, '?')}")
    return Claim(key, False, reason=f"more than {MAX_GENERATIONS} claims")


def _stale(held: Any, identity: Identity) -> bool:
    try:
        lease_ms = float(held.tags.get(LEASE_TAG, "0")) * 1000
    except ValueError:
        lease_ms = 0.0
    expired = time.time() * 1000 > (held.creation_time or 0) + lease_ms
    return expired or identity.is_dead_process_of_this_store(held.tags)


def release(client: Any, won: Claim) -> None:
    """Delete a won claim (the spec is stored, or aborted and free for anyone)."""
    if won.won and won.experiment_id:
        client.delete_experiment(won.experiment_id)


def release_leftovers(client: Any, experiment: str, identity: Identity) -> int:
    """Delete the claims this store's finished processes left behind (released while the server
    was down, or the agent was killed); returns how many. Claims of live processes stay."""
    from mlflow.entities import ViewType

    prefix = f"{experiment}/claim/"
    left, token = 0, None
    while True:
        page = client.search_experiments(ViewType.ACTIVE_ONLY, 1000,
                                         f"name LIKE '{prefix}%'", page_token=token)
        for held in page:
            tags = held.tags
            if held.name.startswith(prefix) and (identity.is_this_process(tags)
                                                 or identity.is_dead_process_of_this_store(tags)):
                client.delete_experiment(held.experiment_id)
                left += 1
        token = page.token
        if not token:
            return left


def hide_published_markers(client: Any, experiment: str, experiment_id: str,
                           identity: Identity) -> int:
    """Hide this store's markers whose sample is published (the hide failed mid-outage)."""
    from mlflow.entities import ViewType

    prefix, hidden, token = f"{experiment}/sample/", 0, None
    while True:
        page = client.search_experiments(ViewType.ACTIVE_ONLY, 1000,
                                         f"name LIKE '{prefix}%'", page_token=token)
        for marker in page:
            sample_key = marker.tags.get("sample_key", "")
            spec_id = sample_key.split("|")[0]
            if not (identity.owns(marker.tags) and spec_id.isalnum()):
                continue
            runs = client.search_runs([experiment_id], f"tags.spec_id = '{spec_id}'")
            if any(run.info.status == "FINISHED" and run.data.tags.get("sample_key") == sample_key
                   for run in runs):
                client.delete_experiment(marker.experiment_id)
                hidden += 1
        token = page.token
        if not token:
            return hidden


def win_marker(client: Any, experiment: str, sample_key: str, identity: Identity,
               location: str | None = None) -> tuple[bool, str, bool]:
    """The publish marker of `sample_key`: (this store owns it, its id, it is still active)."""
    name = marker_name(experiment, short_key(sample_key))
    for _ in range(3):
        created = create_unique(client, name, identity.tags(sample_key=sample_key), location)
        if created is not None:
            return True, created, True
        marker = client.get_experiment_by_name(name)
        if marker is not None:
            return identity.owns(marker.tags), marker.experiment_id, \
                marker.lifecycle_stage == "active"
    raise RuntimeError(f"publish marker {name}: neither created nor found")

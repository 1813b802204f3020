"""Ownership and scopes, on SQLite and PostgreSQL: every mutation of the API against a read-only
token (403 naming the scope), another user's submit token (403 naming the owner), the owner, an
admin, expired / revoked / missing tokens (401), and work from before owners (admins only).
Then priorities (at submit, changed later, no part of the spec's hash) and the views' owner."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.app.main import create_app
from service.core.lifecycle import utcnow
from service.store import tokens as tokens_store
from service.store import users
from service.store.db import session_scope
from service.store.models import Experiment, Sweep

API = "/api/v1"

SWEEP = {
    "base": {"name": "sweep", "datasets": [{"name": "digits"}], "weightings": [{"name": "constant"}],
             "model": {"preset": "tiny"}, "training": {"steps": 40, "batch_size": 16},
             "evaluation": {"steps": [5], "num_samples": 16, "metrics": ["fd_digits"], "analyses": False}},
    "search_space": {"weighting": {"grid": ["constant", "debias"]}},
    "metric": "fd_digits",
}


@pytest.fixture
def make_token(session_factory):
    """The Authorization header of a new token: `make_token("alice", "submit", expires_in=..., revoked=...)`."""
    def make(user: str, *scopes: str, expires_in: timedelta | None = None, revoked: bool = False) -> dict[str, str]:
        with session_scope(session_factory) as s:
            row, tok = tokens_store.create_token(s, name=f"{user}-{'-'.join(scopes)}", user=user, scopes=scopes,
                                                 expires_at=utcnow() + expires_in if expires_in is not None else None)
            if revoked:
                tokens_store.revoke_token(s, token_id=row.id)
        return {"Authorization": f"Bearer {tok}"}

    return make


@dataclass
class Work:
    experiment: str
    run: str
    sweep: str


def _submit(client, headers, make_spec) -> Work:
    exp = client.post(f"{API}/experiments", json=make_spec(), headers=headers)
    sweep = client.post(f"{API}/sweeps", json=copy.deepcopy(SWEEP), headers=headers)
    assert exp.status_code == sweep.status_code == 201, (exp.text, sweep.text)
    return Work(experiment=exp.json()["id"], run=exp.json()["run_ids"][0], sweep=sweep.json()["id"])


@pytest.fixture
def alices(client, make_token, make_spec) -> Work:
    """An experiment and a sweep that alice submitted."""
    return _submit(client, make_token("alice", "submit"), make_spec)


@pytest.fixture
def legacy(client, make_token, make_spec, session_factory) -> Work:
    """An experiment and a sweep from before owners (owner None), as migration 0006 leaves them."""
    work = _submit(client, make_token("root", "admin"), make_spec)
    with session_scope(session_factory) as s:
        s.execute(update(Experiment).values(owner=None))
        s.execute(update(Sweep).values(owner=None))
    return work


# Every mutation: (method, path, body), the path filled from a Work; and what success returns.
MUTATIONS = {
    "submit": ("POST", "/experiments", "spec"),
    "validate": ("POST", "/experiments:validate", "spec"),
    "priority": ("PATCH", "/experiments/{experiment}", {"priority": 7}),
    "cancel": ("POST", "/experiments/{experiment}/cancel", None),
    "sweep": ("POST", "/sweeps", "sweep"),
    "cancel_sweep": ("POST", "/sweeps/{sweep}/cancel", None),
    "rescore": ("POST", "/runs/{run}/rescore", {"metrics": ["kid"]}),
}
OWNED = ["priority", "cancel", "cancel_sweep", "rescore"]  # acts on someone's work
ACTION = {"priority": "reprioritise", "cancel": "cancel", "cancel_sweep": "cancel", "rescore": "rescore"}
OK = {"submit": 201, "validate": 200, "priority": 200, "cancel": 200, "sweep": 201, "cancel_sweep": 200,
      "rescore": 409}  # rescore: past the ownership check, a queued run has no features yet (409, not 403)


def mutate(client, name: str, work: Work | None, headers: dict, make_spec):
    method, path, body = MUTATIONS[name]
    if work is not None:
        path = path.format(**vars(work))
    json = make_spec() if body == "spec" else copy.deepcopy(SWEEP) if body == "sweep" else body
    return client.request(method, API + path, json=json, headers=headers)


def _forbidden(r) -> dict:
    assert r.status_code == 403, r.text
    assert "www-authenticate" not in r.headers
    err = r.json()["error"]
    assert err["code"] == "forbidden"
    return err


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_a_read_only_token_is_403_naming_the_scope(client, alices, make_token, make_spec, name):
    err = _forbidden(mutate(client, name, alices, make_token("carol", "read"), make_spec))
    assert err["needs"] == "submit" and "owner" not in err
    assert err["message"] == "this token (user carol, scopes: read) lacks the 'submit' scope"
    assert client.get(f"{API}/experiments/{alices.experiment}", headers=make_token("carol", "read")).status_code == 200


@pytest.mark.parametrize("token", ["none", "expired", "revoked", "unknown"])
@pytest.mark.parametrize("name", list(MUTATIONS))
def test_no_live_token_is_401(client, alices, make_token, make_spec, count_rows, name, token):
    headers = {"none": {}, "unknown": {"Authorization": "Bearer snr_nope"},
               "expired": make_token("alice", "admin", expires_in=timedelta(seconds=-1)),
               "revoked": make_token("alice", "admin", revoked=True)}[token]
    r = mutate(client, name, alices, headers, make_spec)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
    if token == "expired":
        assert "expired at" in r.json()["error"]["message"]
    assert count_rows("experiments") == 2 and count_rows("sweeps") == 1  # alice's, nothing more


@pytest.mark.parametrize("name", OWNED)
def test_another_users_work_is_403_naming_the_owner(client, alices, make_token, make_spec, session_factory, name):
    err = _forbidden(mutate(client, name, alices, make_token("bob", "submit"), make_spec))
    assert err["owner"] == "alice" and err["needs"] == "admin"
    what = f"sweep {alices.sweep}" if name == "cancel_sweep" else \
        f"run {alices.run} (experiment {alices.experiment})" if name == "rescore" else f"experiment {alices.experiment}"
    assert err["message"] == (f"{what} is owned by alice; user bob may not {ACTION[name]} it "
                              "(needs its owner or an admin token)")
    with session_factory() as s:  # nothing changed
        exp = s.get(Experiment, alices.experiment)
        assert exp.priority == 0 and exp.cancel_requested_at is None


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_the_owner_may(client, alices, make_token, make_spec, name):
    r = mutate(client, name, alices, make_token("alice", "submit"), make_spec)
    assert r.status_code == OK[name], r.text


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_an_admin_may_act_on_anyones_work(client, alices, make_token, make_spec, name):
    r = mutate(client, name, alices, make_token("root", "admin"), make_spec)
    assert r.status_code == OK[name], r.text


@pytest.mark.parametrize("name", OWNED)
def test_work_from_before_owners_is_an_admins_only(client, legacy, make_token, make_spec, name):
    err = _forbidden(mutate(client, name, legacy, make_token("alice", "submit"), make_spec))
    assert err["needs"] == "admin" and "owner" not in err
    assert "has no owner" in err["message"] and "needs an admin token" in err["message"]
    assert mutate(client, name, legacy, make_token("root", "admin"), make_spec).status_code == OK[name]


def test_scopes_form_a_ladder():
    assert tokens_store.parse_scopes("admin read") == ("read", "admin")
    assert [tokens_store.has_scope("submit", s) for s in ("read", "submit", "admin")] == [True, True, False]
    assert tokens_store.has_scope(("admin",), "read") and not tokens_store.has_scope(("read",), "submit")
    with pytest.raises(ValueError, match="unknown scope.*'write'.*valid: read, submit, admin"):
        tokens_store.parse_scopes(["write"])
    with pytest.raises(ValueError, match="at least one scope"):
        tokens_store.parse_scopes([])


def test_a_token_is_a_users_and_creates_them(session_factory):
    with session_scope(session_factory) as s:
        row, tok = tokens_store.create_token(s, name="laptop", user="alice")
        tokens_store.create_token(s, name="ci", user="alice", scopes=["read"])
    with session_factory() as s:
        got = tokens_store.verify_token(s, token=tok)
        assert (got.id, got.name, got.user, got.scopes, got.expires_at) == (row.id, "laptop", "alice", "submit", None)
        assert [u.name for u in users.list_users(s)] == ["alice"]


# ---------------------------------------------------------------- owners and priorities
def test_owner_and_priority_are_recorded_and_shown(client, make_token, make_spec):
    alice = make_token("alice", "submit")
    r = client.post(f"{API}/experiments", json=make_spec(), headers=alice, params={"priority": 5})
    assert r.status_code == 201, r.text
    exp = r.json()
    assert exp["owner"] == "alice" and exp["priority"] == 5 and "priority" not in exp["spec"]
    listed = client.get(f"{API}/experiments", headers=alice).json()["items"][0]
    assert (listed["owner"], listed["priority"]) == ("alice", 5)
    plain = client.post(f"{API}/experiments", json=make_spec(), headers=alice).json()
    assert plain["priority"] == 0 and plain["spec_hash"] == exp["spec_hash"]  # priority is no part of the spec

    sw = client.post(f"{API}/sweeps", json=copy.deepcopy(SWEEP), headers=alice, params={"priority": -3}).json()
    assert sw["owner"] == "alice" and sw["priority"] == -3
    assert client.get(f"{API}/experiments/{sw['experiment_id']}", headers=alice).json()["priority"] == -3
    assert client.get(f"{API}/sweeps", headers=alice).json()["items"][0]["owner"] == "alice"


def test_a_priority_change_wakes_the_dispatcher(client, alices, make_token):
    woken = []
    client.app.state.wake_dispatcher = lambda: woken.append(1)
    r = client.patch(f"{API}/experiments/{alices.experiment}", json={"priority": -100}, headers=make_token("alice", "submit"))
    assert r.status_code == 200 and r.json()["priority"] == -100 and woken == [1]
    assert client.get(f"{API}/experiments/{alices.experiment}", headers=make_token("x", "read")).json()["priority"] == -100


@pytest.mark.parametrize("value", [101, -101, "5", 1.5, None])
def test_a_bad_priority_is_422_naming_it(client, alices, make_token, make_spec, value, count_rows):
    alice = make_token("alice", "submit")
    r = client.patch(f"{API}/experiments/{alices.experiment}", json={"priority": value}, headers=alice)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "priority"], r.text
    if isinstance(value, int):
        r = client.post(f"{API}/experiments", json=make_spec(), headers=alice, params={"priority": value})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "priority"], r.text
        r = client.post(f"{API}/sweeps", json=copy.deepcopy(SWEEP), headers=alice, params={"priority": value})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "priority"], r.text
    assert count_rows("experiments") == 2


def test_the_idempotency_scope_is_the_token_not_the_user(client, make_token, make_spec, count_rows):
    laptop, ci = make_token("alice", "submit"), make_token("alice", "submit")
    first = client.post(f"{API}/experiments", json=make_spec(), headers={**laptop, "Idempotency-Key": "k"})
    again = client.post(f"{API}/experiments", json=make_spec(), headers={**ci, "Idempotency-Key": "k"})
    assert first.status_code == again.status_code == 201 and first.json()["id"] != again.json()["id"]
    assert count_rows("experiments") == 2


def test_without_auth_the_caller_is_an_anonymous_admin(settings, engine, make_spec, session_factory):
    with TestClient(create_app(settings.model_copy(update={"auth_enabled": False}))) as c:
        exp = c.post(f"{API}/experiments", json=make_spec()).json()
        assert exp["owner"] == "anonymous"
        with session_scope(session_factory) as s:
            s.execute(update(Experiment).values(owner="someone"))
        assert c.post(f"{API}/experiments/{exp['id']}/cancel").status_code == 200


# ---------------------------------------------------------------- reads
def test_any_live_token_reads_and_an_expired_one_does_not(client, settings, engine, alices, make_token):
    paths = [f"{API}/experiments", f"{API}/experiments/{alices.experiment}", f"{API}/sweeps", f"{API}/runs/{alices.run}"]
    for scope in ("read", "submit", "admin"):
        assert {client.get(p, headers=make_token("dana", scope)).status_code for p in paths} == {200}
    expired = make_token("dana", "read", expires_in=timedelta(seconds=-1))
    r = client.get(paths[0], headers=expired)
    assert r.status_code == 401 and "expired at" in r.json()["error"]["message"]
    assert client.get(paths[0]).status_code == 401

    # the pages: any live token, from the cookie; an expired one gets the token form
    client.cookies.set("snrlab_token", make_token("dana", "read")["Authorization"].split()[1])
    assert client.get("/experiments").status_code == 200
    client.cookies.set("snrlab_token", expired["Authorization"].split()[1])
    form = client.get("/experiments")
    assert form.status_code == 401 and "expired" in form.text
    client.cookies.clear()

    with TestClient(create_app(settings.model_copy(update={"public_reads": True}))) as c:
        assert {c.get(p).status_code for p in paths} == {200}
        assert c.post(f"{API}/experiments/{alices.experiment}/cancel").status_code == 401

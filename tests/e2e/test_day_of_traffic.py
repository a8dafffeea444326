"""A day of traffic over HTTP: every balance, tier and leaderboard equals the pure engine's,
retried batches count once, and `rally audit` passes."""

from __future__ import annotations

from engine.reference import Reference
from tests.e2e.conftest import get, post, rally_cli
from tests.e2e.traffic import as_events, batches, day_of_traffic


def test_day_of_traffic_matches_the_engine(deployment) -> None:
    wire = day_of_traffic()
    chunks = batches(wire, 500)
    for chunk in chunks:
        assert post(deployment.url, chunk) == (202, {"accepted": len(chunk)})
    for chunk in chunks[3:6]:  # a client retrying batches it already sent: same ids
        assert post(deployment.url, chunk)[0] == 202
    idem = {"Idempotency-Key": "retry-me-1"}
    assert post(deployment.url, chunks[1], headers=idem) == post(
        deployment.url, chunks[1], headers=idem
    )
    assert deployment.client.wait_idle(120)

    ref = Reference(deployment.settings.rulebook(), deployment.settings.limits.lateness_s)
    ref.ingest(as_events(wire), 0.0)
    ref.finish()
    tiers = deployment.settings.rulebook().network("tv").tiers
    assert ("tv", "botty") not in ref.members  # the ignore list earns nothing
    for (_, user), expected in ref.members.items():
        status, body = get(deployment.url, f"/v1/members/{user}?network=tv")
        assert status == 200, body
        assert body["balance"] == expected.balance, user
        assert body["lifetime_points"] == expected.lifetime, user
        assert body["tier"] == tiers.names[expected.tier], user
        standings = {ch: v["points"] for ch, v in body["channels"].items()}
        want = {ch: b[user] for (_, ch), b in ref.leaderboards.items() if user in b}
        assert standings == want, user
        assert all(v["rank"] >= 1 for v in body["channels"].values())
        status, page = get(deployment.url, f"/v1/members/{user}/ledger?network=tv&limit=500")
        assert status == 200
        assert sum(e["amount"] for e in page["entries"]) == expected.balance
        assert len(page["entries"]) == len(ref.ledger[("tv", user)])

    for (_, channel), board in ref.leaderboards.items():
        status, body = get(
            deployment.url, f"/v1/channels/{channel}/leaderboard?network=tv&limit=10"
        )
        assert status == 200, body
        want = sorted(board.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        got = [(e["user_id"], e["points"]) for e in body["entries"]]
        assert [p for _, p in got] == [p for _, p in want]
        assert dict(got).items() <= dict(board).items()

    status, stats = get(deployment.url, "/v1/channels/c0/stats?network=tv")
    assert status == 200
    assert stats["live"] is True
    assert stats["viewers_present"] > 0

    done = rally_cli("audit", "--config", str(deployment.config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit passed" in done.stdout


def test_audit_fails_on_a_tampered_balance(deployment, redis_client) -> None:
    from actors.keys import Keys
    from engine.member import state_decoder, state_encoder

    wire = day_of_traffic(seed=3, members=10, chats=200)
    assert post(deployment.url, wire)[0] == 202
    assert deployment.client.wait_idle(60)
    keys = Keys(deployment.settings.namespace)
    deployment.client.stop()  # nobody writes while we tamper
    state = state_decoder.decode(redis_client.hget(keys.mstate, "tv:m1"))
    state.balance += 1
    redis_client.hset(keys.mstate, "tv:m1", state_encoder.encode(state))
    done = rally_cli("audit", "--config", str(deployment.config))
    assert done.returncode == 1
    assert "tv:m1" in done.stdout

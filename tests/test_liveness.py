from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerchat.policy.liveness import Liveness

T0 = 1000.0


def test_first_sign_of_life_is_new_and_later_ones_are_not() -> None:
    live = Liveness(timeout=15.0)
    assert not live.is_active("alice")
    assert live.last_heard("alice") is None
    assert live.heard("alice", T0) is True
    assert live.heard("alice", T0 + 5) is False
    assert live.is_active("alice")
    assert live.last_heard("alice") == T0 + 5


def test_silent_peer_expires_only_after_the_timeout() -> None:
    live = Liveness(timeout=15.0)
    live.heard("alice", T0)
    assert live.expire(T0 + 15.0) == []  # exactly the timeout is not yet "longer than"
    assert live.is_active("alice")
    assert live.expire(T0 + 15.001) == ["alice"]
    assert not live.is_active("alice")
    assert live.expire(T0 + 100) == []  # reported once


def test_hearing_again_postpones_expiry() -> None:
    live = Liveness(timeout=10.0)
    live.heard("alice", T0)
    live.heard("bob", T0)
    live.heard("alice", T0 + 8)
    assert live.expire(T0 + 12) == ["bob"]
    assert live.is_active("alice")
    assert live.expire(T0 + 18.5) == ["alice"]


def test_expired_peer_coming_back_is_new_again() -> None:
    live = Liveness(timeout=10.0)
    live.heard("alice", T0)
    live.expire(T0 + 11)
    assert live.heard("alice", T0 + 12) is True


def test_expire_lists_the_longest_silent_first() -> None:
    live = Liveness(timeout=1.0)
    live.heard("carol", T0 + 2)
    live.heard("alice", T0)
    live.heard("bob", T0 + 1)
    assert live.expire(T0 + 10) == ["alice", "bob", "carol"]


def test_forget_removes_at_once() -> None:
    live = Liveness(timeout=10.0)
    live.heard("alice", T0)
    assert live.forget("alice") is True
    assert not live.is_active("alice")
    assert live.forget("alice") is False
    assert live.forget("nobody") is False
    assert live.expire(T0 + 100) == []  # a goodbye is not reported again as a timeout
    assert live.heard("alice", T0 + 1) is True


def test_next_expiry_tracks_the_quietest_peer() -> None:
    live = Liveness(timeout=10.0)
    assert live.next_expiry() is None
    live.heard("alice", T0)
    live.heard("bob", T0 + 3)
    assert live.next_expiry() == T0 + 10
    live.forget("alice")
    assert live.next_expiry() == T0 + 13
    assert len(live) == 1


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("nan")])
def test_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match=r"^liveness timeout must be positive$"):
        Liveness(timeout)


events = st.lists(
    st.tuples(
        st.sampled_from(["heard", "forget", "expire"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.floats(0, 5),
    ),
    max_size=60,
)


@settings(max_examples=200)
@given(events)
def test_matches_a_simple_model(steps: list[tuple[str, str, float]]) -> None:
    """Against a dict model: a key is active iff heard and not forgotten or silent > timeout."""
    timeout = 3.0
    live = Liveness(timeout)
    model: dict[str, float] = {}
    now = T0
    for op, key, dt in steps:
        now += dt
        if op == "heard":
            assert live.heard(key, now) is (key not in model)
            model[key] = now
        elif op == "forget":
            assert live.forget(key) is (key in model)
            model.pop(key, None)
        else:
            gone = {k for k, t in model.items() if now - t > timeout}
            assert set(live.expire(now)) == gone
            for k in gone:
                del model[k]
        for k in "abcd":
            assert live.is_active(k) is (k in model)
            assert live.last_heard(k) == model.get(k)

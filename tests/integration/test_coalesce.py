"""The coalesced batch leaves Redis exactly as the same calls applied one by one."""

from __future__ import annotations

import uuid

import pytest
import redis as redis_lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.coalesce import APPLY_SCRIPT, Coalescer, encode_commands

pytestmark = pytest.mark.integration

KEYS = ["h1", "h2", "z1", "s1"]
FIELDS = ["a", "b", "c"]
MEMBERS = ["m1", "m2", "m3"]

ops = st.one_of(
    st.tuples(st.just("hincrby"), st.sampled_from(["h1", "h2"]), st.sampled_from(FIELDS), st.integers(-5, 5)),
    st.tuples(st.just("hset"), st.sampled_from(["h1", "h2"]), st.sampled_from(FIELDS), st.integers(0, 9)),
    st.tuples(st.just("zincrby"), st.just("z1"), st.sampled_from(MEMBERS), st.integers(-3, 3)),
    st.tuples(st.just("zadd"), st.just("z1"), st.sampled_from(MEMBERS), st.integers(0, 9)),
    st.tuples(st.just("zrem"), st.just("z1"), st.sampled_from(MEMBERS), st.none()),
    st.tuples(st.just("set"), st.just("s1"), st.none(), st.integers(0, 9)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS), st.none(), st.none()),
)


def run(target, prefix: str, calls) -> None:  # noqa: ANN001
    for op, key, arg, value in calls:
        name = prefix + key
        if op == "hincrby":
            target.hincrby(name, arg, value)
        elif op == "hset":
            target.hset(name, arg, value)
        elif op == "zincrby":
            target.zincrby(name, value, arg)
        elif op == "zadd":
            target.zadd(name, {arg: value})
        elif op == "zrem":
            target.zrem(name, arg)
        elif op == "set":
            target.set(name, value)
        else:
            target.delete(name)


def snapshot(r: redis_lib.Redis, prefix: str) -> dict:
    out = {}
    for key in KEYS:
        name = prefix + key
        kind = r.type(name).decode()
        if kind == "hash":
            out[key] = {k: int(v) for k, v in r.hgetall(name).items()}
        elif kind == "zset":
            out[key] = dict(r.zrange(name, 0, -1, withscores=True))
        elif kind == "string":
            out[key] = r.get(name)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(ops, max_size=40), preexisting=st.booleans())
def test_coalesced_writes_equal_sequential_writes(redis_url: str, calls, preexisting: bool) -> None:
    r = redis_lib.Redis.from_url(redis_url)
    a, b = f"seq{uuid.uuid4().hex[:6]}:", f"co{uuid.uuid4().hex[:6]}:"
    if preexisting:
        for prefix in (a, b):
            r.hset(prefix + "h1", mapping={"a": 1, "b": 2})
            r.zadd(prefix + "z1", {"m1": 5.0})
    run(r, a, calls)
    coalescer = Coalescer()
    run(coalescer, b, calls)
    r.eval(APPLY_SCRIPT, 0, *encode_commands(coalescer.commands()))
    assert snapshot(r, b) == snapshot(r, a)

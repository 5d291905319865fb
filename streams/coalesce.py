"""Folds the Redis writes of a whole batch into the fewest commands with the same result.

Effect functions describe one event's writes (``hincrby``, ``hset``, ``set``, ``delete``,
``zincrby``, ...). Applying them one command each costs a Python round of encoding per
command; a batch of 500 interactions touching 300 users would send ~3,000 commands. The
:class:`Coalescer` records the same calls and replays, per key, only their net effect —
increments summed, later assignments winning, a delete dropping what came before it — so
the batch costs one command per touched key and field group, all run by one Lua script
call (atomic, like MULTI/EXEC, but one round trip for the client to encode and parse).

The net effect equals applying the calls in order, which a unit test checks against a
real Redis on random call sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


#: Most members one command carries: Lua's unpack() is limited by its C stack.
CHUNK = 500

_SET = 0  # field holds an assigned value (possibly incremented since)
_INCR = 1  # field holds only an increment relative to what Redis has


@dataclass
class _KeyOps:
    deleted: bool = False  # DEL before the ops below
    string: Any = None  # SET value, when the key is a plain string
    has_string: bool = False
    ex: int | None = None
    hash_fields: dict[str, tuple[int, Any]] = field(default_factory=dict)
    zset: dict[str, tuple[int, float]] = field(default_factory=dict)
    zrem: set[str] = field(default_factory=set)
    expire: int | None = None  # EXPIRE after the hash and sorted-set writes


class Coalescer:
    """Records effect calls for a batch; :meth:`flush_into` queues their net effect."""

    def __init__(self) -> None:
        self._keys: dict[str, _KeyOps] = {}
        self._appends: list[tuple[Any, ...]] = []
        self._soon: dict[str, bytes] = {}

    def _ops(self, name: str) -> _KeyOps:
        ops = self._keys.get(name)
        if ops is None:
            ops = self._keys[name] = _KeyOps()
        return ops

    def __len__(self) -> int:
        return len(self._keys)

    # --- the Effects protocol -----------------------------------------------------------

    def set(self, name: str, value: Any, ex: int | None = None) -> None:
        self._soon.pop(name, None)
        ops = self._ops(name)
        ops.hash_fields.clear()
        ops.zset.clear()
        ops.zrem.clear()
        ops.deleted = True  # SET replaces whatever type the key had
        ops.string, ops.has_string, ops.ex = value, True, ex

    def delete(self, *names: str) -> None:
        for name in names:
            self._soon.pop(name, None)
            self._keys[name] = _KeyOps(deleted=True)

    def set_soon(self, name: str, value: bytes) -> None:
        """Replace a read-model document the worker can always compute again (a user's
        ranked list): written just after the batch's atomic call, a few per call, so a
        batch's lists never hold Redis for long. A crash in between leaves the lists behind
        the counters until the batch, redelivered, is relearned (the restored model has not
        learned it) and its lists written again. Like ``set``
        it replaces whatever the batch queued for the key before; the latest call wins.

        >>> c = Coalescer()
        >>> c.delete("k"); c.set_soon("k", b"v"); c.commands(), c.soon_commands()
        ([], [('SET', 'k', b'v')])
        >>> c.delete("k"); c.commands(), c.soon_commands()
        ([('DEL', 'k')], [])
        """
        self._keys.pop(name, None)
        self._soon[name] = value

    def soon_commands(self) -> list[tuple[Any, ...]]:
        """The ``set_soon`` writes, as SET commands."""
        return [("SET", name, value) for name, value in self._soon.items()]

    def hset(self, name: str, key: str | None = None, value: Any = None, mapping: dict | None = None) -> None:
        fields = self._ops(name).hash_fields
        if key is not None:
            fields[key] = (_SET, value)
        for k, v in (mapping or {}).items():
            fields[k] = (_SET, v)

    def hincrby(self, name: str, key: str, amount: int = 1) -> None:
        self._incr(name, key, amount)

    def hincrbyfloat(self, name: str, key: str, amount: float = 1.0) -> None:
        self._incr(name, key, amount)

    def _incr(self, name: str, key: str, amount: float) -> None:
        fields = self._ops(name).hash_fields
        kind, current = fields.get(key, (_INCR, 0))
        if kind == _SET:
            fields[key] = (_SET, float(current) + amount if isinstance(amount, float) else int(current) + amount)
        else:
            fields[key] = (_INCR, current + amount)

    def zincrby(self, name: str, amount: float, value: str) -> None:
        ops = self._ops(name)
        if value in ops.zrem:  # removed earlier in the batch: counts from zero again
            ops.zrem.discard(value)
            ops.zset[value] = (_SET, 0.0)
        kind, current = ops.zset.get(value, (_INCR, 0.0))
        ops.zset[value] = (kind, current + amount)

    def zadd(self, name: str, mapping: dict[str, float]) -> None:
        ops = self._ops(name)
        for member, score in mapping.items():
            ops.zrem.discard(member)
            ops.zset[member] = (_SET, score)

    def zrem(self, name: str, *values: str) -> None:
        ops = self._ops(name)
        for value in values:
            ops.zset.pop(value, None)
            ops.zrem.add(value)

    def expire(self, name: str, seconds: int) -> None:
        """Let a hash or sorted set expire ``seconds`` after the batch (latest call wins)."""
        self._ops(name).expire = int(seconds)

    def xadd(self, name: str, fields: dict[str, Any], maxlen: int | None = None, minid: str | None = None) -> None:
        """Append to a stream, trimmed to about ``maxlen`` entries or to ids from ``minid``
        on. Appends are never folded; they run last, in call order."""
        cap = ("MAXLEN", "~", maxlen) if maxlen else ("MINID", "~", minid) if minid else ()
        self._appends.append(("XADD", name, *cap, "*", *(x for kv in fields.items() for x in kv)))

    # --- replay -------------------------------------------------------------------------

    def commands(self) -> list[tuple[Any, ...]]:
        """The net effect as Redis commands, e.g. ``("HINCRBY", key, field, 3)``."""
        out: list[tuple[Any, ...]] = []
        for name, ops in self._keys.items():
            if ops.deleted and not ops.has_string:
                out.append(("DEL", name))
            if ops.has_string:
                out.append(("SET", name, ops.string) if ops.ex is None else ("SET", name, ops.string, "EX", ops.ex))
                continue
            assigned = [x for k, (kind, v) in ops.hash_fields.items() if kind == _SET for x in (k, v)]
            for first in range(0, len(assigned), 2 * CHUNK):
                out.append(("HSET", name, *assigned[first : first + 2 * CHUNK]))
            for k, (kind, v) in ops.hash_fields.items():
                if kind == _INCR:
                    out.append(("HINCRBYFLOAT" if isinstance(v, float) else "HINCRBY", name, k, v))
            removed = sorted(ops.zrem)
            for first in range(0, len(removed), CHUNK):
                out.append(("ZREM", name, *removed[first : first + CHUNK]))
            absolute = [x for m, (kind, score) in ops.zset.items() if kind == _SET for x in (score, m)]
            for first in range(0, len(absolute), 2 * CHUNK):
                out.append(("ZADD", name, *absolute[first : first + 2 * CHUNK]))
            for member, (kind, amount) in ops.zset.items():
                if kind == _INCR:
                    out.append(("ZINCRBY", name, amount, member))
            if ops.expire is not None:
                out.append(("EXPIRE", name, ops.expire))
        out.extend(self._appends)
        return out


#: Runs a list of commands atomically in one round trip. ARGV holds them back to back, each
#: preceded by its number of arguments; ``unpack`` hands a slice of ARGV to ``redis.call``
#: as it is. No decoding: a JSON argument (cjson) or a MessagePack one (cmsgpack) cost
#: Redis, for 6,500 commands, 3 ms of building Lua tables before the first command ran,
#: and the whole call took 10.8 ms against 7.5 ms now (the reads of the API wait behind it).
APPLY_SCRIPT = """
local i, n = 1, #ARGV
while i <= n do
  local len = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + len))
  i = i + len + 1
end
return n
"""


def encode_commands(commands: list[tuple[Any, ...]]) -> list[Any]:
    """Commands -> the ARGV of :data:`APPLY_SCRIPT`: each command's length, then its
    arguments as the client encodes any argument (bytes as they are, numbers as repr).

    >>> encode_commands([("SET", "k", b'{"a":1}'), ("HINCRBY", "h", "f", 2)])
    [3, 'SET', 'k', b'{"a":1}', 4, 'HINCRBY', 'h', 'f', 2]
    """
    out: list[Any] = []
    for command in commands:
        out.append(len(command))
        out.extend(command)
    return out

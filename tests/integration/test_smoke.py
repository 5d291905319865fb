import orjson
import pytest

pytestmark = pytest.mark.integration


def test_worker_applies_items(stack):
    stack.start_worker()
    stack.produce("items", [orjson.dumps({"type": "item", "item_id": f"i{n}", "title": "t"}) for n in range(10)],
                  [f"i{n}".encode() for n in range(10)])
    stack.wait_applied("items", 10, timeout_s=30)
    assert orjson.loads(stack.redis.get(stack.keys.item("i3")))["title"] == "t"

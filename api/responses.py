"""The JSON response every route returns: documents rendered by orjson.

FastAPI deprecated its ``ORJSONResponse`` (it renders response models through Pydantic now,
and warned on every request, filling api.log). Eddy's routes mostly return documents read
from Redis as they are, which no response model describes better than the documents
themselves, so they keep orjson, through this class.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class ORJSONResponse(JSONResponse):
    """A JSON response rendered by orjson (non-string keys and numpy values allowed)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)

"""Baseline for the API benchmarks: a bare FastAPI app answering a constant body."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse

app = FastAPI()
CONSTANT = {"accepted": 0, "event_ids": []}


@app.post("/api/events", status_code=202)
async def post_events(request: Request) -> ORJSONResponse:
    await request.body()
    return ORJSONResponse(CONSTANT, 202)


@app.get("/constant")
async def get_constant() -> ORJSONResponse:
    return ORJSONResponse(CONSTANT)

"""HTTP load for the API benchmarks: ``wrk`` (C, one thread) drives the server, so the
figures are the server's and not a Python client's (on these two cores an httpx client
topped out near 800 requests/s even against a constant body)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

_POST_SCRIPT = """
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, bodies[(n %% #bodies) + 1])
end
path = %s
bodies = {
%s
}
"""

_GET_SCRIPT = """
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n %% #paths) + 1])
end
paths = {
%s
}
"""


@dataclass
class Load:
    requests: int
    seconds: float
    failed: int  # answers other than 2xx/3xx, and socket errors

    @property
    def ok_per_s(self) -> float:
        return (self.requests - self.failed) / self.seconds


def wrk(
    url: str, seconds: float, *, connections: int = 8, bodies: list[bytes] | None = None, paths: list[str] | None = None
) -> Load:
    """Load ``url`` for ``seconds``: GETs (of ``url``, or cycling through ``paths`` on its
    host), or POSTs to ``url`` cycling through ``bodies`` (JSON)."""
    if shutil.which("wrk") is None:
        raise SystemExit("the API benchmarks need wrk: `make bench` installs it (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s"]
        if bodies is not None:
            script = Path(tmp) / "post.lua"
            for body in bodies:
                if b"]==]" in body:
                    raise ValueError("a body holds the Lua long-string terminator ]==]")
            listed = ",\n".join(f"[==[{b.decode()}]==]" for b in bodies)
            script.write_text(_POST_SCRIPT % (f'"{urlsplit(url).path}"', listed))
            args += ["-s", str(script)]
        elif paths is not None:
            script = Path(tmp) / "get.lua"
            script.write_text(_GET_SCRIPT % ",\n".join(f'"{p}"' for p in paths))
            args += ["-s", str(script)]
        out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if done is None:
        raise RuntimeError(f"unreadable wrk output:\n{out}")
    elapsed = float(done.group(2)) / (1000.0 if done.group(3) == "ms" else 1.0)
    failed = sum(int(m) for m in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        failed += sum(int(x) for x in errors.groups())
    return Load(int(done.group(1)), elapsed, failed)

"""Run the fault-injection trials: ``python -m tests.faults [--short|--full] [TRIAL ...]``.

Prints one line of figures per trial and exits 1 when any figure misses its bound (2
when a trial could not run at all), so the suite can run unattended.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from tests.faults import TRIALS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--short", dest="scale", action="store_const", const="short",
                      help="seconds-long versions (what CI runs)")
    size.add_argument("--full", dest="scale", action="store_const", const="full",
                      help="the issue's sizes (default)")
    parser.add_argument("trials", nargs="*", metavar="TRIAL", help=f"any of {', '.join(TRIALS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [t for t in args.trials if t not in TRIALS]
    if unknown:
        parser.error(f"unknown trial(s) {', '.join(unknown)}; choose from {', '.join(TRIALS)}")
    scale = args.scale or "full"
    code = 0
    for name in args.trials or TRIALS:
        start = time.monotonic()
        try:
            result = importlib.import_module(f"tests.faults.{name}").run(scale)
        except Exception:  # noqa: BLE001 - one trial that cannot run must not hide the others
            traceback.print_exc()
            print(f"{name} [{scale}] could not run -> FAIL", flush=True)
            code = 2
            continue
        print(f"{result.line()} ({time.monotonic() - start:.0f} s)", flush=True)
        if not result.ok and code == 0:
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())

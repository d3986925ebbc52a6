#!/usr/bin/env python3
"""Try every bad input and fault of tests/reliability/cases.py on the real CLI entry points
(in-process ``main(argv)``, one real subprocess kill) and print the counts:

    bad inputs answered cleanly: N/M, faults survived: N/M
    per tool: benchmark N/M, demo N/M, ...  (every tool of tools/)

A bad input is answered cleanly when it gets exit code 2, one ``error:`` line naming the
problem, no traceback, and no file changes. A fault is survived when following the printed
advice finishes the run with nothing lost. The faults are the kill and full-disk matrix over
every write point of an epoch commit, plus the named scenarios. Runs on the CPU in a
temporary folder (about a minute)::

    OMP_NUM_THREADS=1 python3 scripts/probe_bad_inputs.py [-v]
"""

import argparse
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout

from tests.reliability.cases import (BAD_INPUTS, FAULTS, REAL_FAULTS, Env, commit_fault,  # noqa: E402
                                     commit_points, try_bad_input)


def attempt(label, fn, failures):
    try:
        fn()
        return True
    except BaseException as e:  # noqa: BLE001 - a probe reports every way a case can fail
        if isinstance(e, KeyboardInterrupt):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        failures.append(f"{label}: {type(e).__name__}: {first[:300]}")
        logging.debug("%s", traceback.format_exc())
        return False


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="print each case and the tracebacks of failures")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    os.environ.setdefault("WANDB_MODE", "offline")
    t0 = time.time()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        env = Env(Path(tmp))
        bad_ok, per_tool = 0, {}
        for case in BAD_INPUTS:
            ok = attempt(f"bad input '{case.id}'", lambda: try_bad_input(env, case), failures)
            bad_ok += ok
            done, total = per_tool.get(case.tool, (0, 0))
            per_tool[case.tool] = (done + ok, total + 1)
            logging.debug("%s bad input %s", "ok  " if ok else "FAIL", case.id)
        points, ref = commit_points(env)
        faults = [(f"{kind} at commit write point {i} ({point})",
                   lambda i=i, kind=kind: commit_fault(env, ref, i, kind))
                  for kind in ("kill", "full") for i, point in enumerate(points)]
        faults += [(f.__name__[len("fault_"):], lambda f=f: f(env)) for f in FAULTS + REAL_FAULTS]
        fault_ok = 0
        for label, fn in faults:
            ok = attempt(f"fault '{label}'", fn, failures)
            fault_ok += ok
            logging.debug("%s fault %s", "ok  " if ok else "FAIL", label)
    for f in failures:
        print(f"FAILED {f}")
    print(f"bad inputs answered cleanly: {bad_ok}/{len(BAD_INPUTS)}, faults survived: {fault_ok}/{len(faults)} "
          f"({time.time() - t0:.0f} s)")
    print("per tool: " + ", ".join(f"{tool} {done}/{total}" for tool, (done, total) in sorted(per_tool.items())))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())

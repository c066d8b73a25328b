"""Minimal harness for the Python tests: `ok NAME` / `FAIL NAME: detail` lines (the
format tests/run.sh counts), exit status 1 when anything failed."""

import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))

_failed = [0]


def check(name, cond, detail=""):
    if cond:
        print(f"ok {name}")
    else:
        _failed[0] += 1
        print(f"FAIL {name}: {detail}")
    sys.stdout.flush()
    return cond


def run(name, fn):
    """Run fn(); an exception is one failure named `name`."""
    try:
        fn()
    except Exception:
        _failed[0] += 1
        print(f"FAIL {name}: exception\n" + "".join("#   " + l + "\n" for l in
                                                   traceback.format_exc().splitlines()))


def raises(name, exc, needle, fn):
    """fn() must raise exactly one exception of type exc whose message contains needle."""
    try:
        fn()
    except exc as e:
        return check(name, needle in str(e), f"message {str(e)!r} does not name {needle!r}")
    except Exception as e:
        return check(name, False, f"raised {type(e).__name__}: {e}")
    return check(name, False, f"no {exc.__name__} raised")


def finish():
    sys.exit(1 if _failed[0] else 0)

"""nettest.py - what the network tests (worker, cluster, gateway, gateway
clients) share: assertions, free ports, `npm ci`, and the runner that prints
the PASS/FAIL/SKIP lines tests/run.sh counts."""
import fcntl
import hashlib
import os
import socket
import subprocess
import sys
import time
import traceback


class Skip(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def npm_ci(folder):
    """Installs a folder's pinned npm packages unless they are there. Under a
    lock: two suites run side by side (.ci/run) must not install at once."""
    folder = os.path.abspath(folder)
    lock = os.path.join("/tmp", "smolmq-npm-" + hashlib.sha1(folder.encode()).hexdigest()[:12] + ".lock")
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        if not os.path.isdir(os.path.join(folder, "node_modules")):
            p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True)
            check(p.returncode == 0, f"npm ci in {folder} failed: {p.stderr.strip()[-500:]}")


def run_tests(prefix, namespace, on_fail=None):
    """Runs every test_* function of namespace (a module's globals()) whose
    name contains one of the command-line arguments (all without any), one
    line each: "PASS prefix/name (t s)", "SKIP ...: why", "FAIL ...: why".
    on_fail() runs after a failure (e.g. to print a process's log). Returns
    the exit status: 1 if anything failed."""
    failed = 0
    only = sys.argv[1:]
    for name, t in list(namespace.items()):
        if not name.startswith("test_") or not callable(t) or (only and not any(o in name for o in only)):
            continue
        t0 = time.monotonic()
        try:
            t()
            print(f"PASS {prefix}/{name} ({time.monotonic() - t0:.1f} s)")
        except Skip as e:
            print(f"SKIP {prefix}/{name}: {e}")
        except Exception as e:
            failed += 1
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            print(f"FAIL {prefix}/{name}: {first}")
            traceback.print_exc()
            if on_fail:
                on_fail()
        sys.stdout.flush()
    return 1 if failed else 0

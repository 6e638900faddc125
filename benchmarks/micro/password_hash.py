"""What one password hash of the auth service costs on this machine.

    python -m benchmarks.micro.password_hash [--runs 20]

Hashes and verifies ``--runs`` times with ``services/auth/passwords.py``'s
argon2id parameters, after one untimed run: median, min and max of each. A login
costs one verification, a registration one hash. The machine is shared: run it
twice, and quote the lower median. No services.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from benchmarks.harness.run import Run, main
from nexanest.services.auth.passwords import MEMORY_COST_KIB, PARALLELISM, TIME_COST, Passwords

_PASSWORD = "correct horse battery staple"  # noqa: S105 - what is hashed, no secret
SERVICES = False
OPTIONS = {"runs": (20, None, "timed hashes and verifications")}


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    hasher = Passwords().hasher  # the very hasher the service uses, without the thread hop
    hasher.verify(hasher.hash(_PASSWORD), _PASSWORD)
    seconds: dict[str, list[float]] = {"hash": [], "verify": []}
    for _ in range(args.runs):
        started = time.perf_counter()
        encoded = hasher.hash(_PASSWORD)
        seconds["hash"].append(time.perf_counter() - started)
        started = time.perf_counter()
        run.check("verify", "the password verifies", True, hasher.verify(encoded, _PASSWORD))
        seconds["verify"].append(time.perf_counter() - started)
    run.checks[:] = [c for c in run.checks if not c["ok"]] or run.checks[-1:]  # one line per run is too many
    ms = {
        k: {"median": statistics.median(v) * 1e3, "min": min(v) * 1e3, "max": max(v) * 1e3} for k, v in seconds.items()
    }
    return {
        "argon2id": {"time_cost": TIME_COST, "memory_cost_kib": MEMORY_COST_KIB, "parallelism": PARALLELISM},
        "ms": ms,
    }


if __name__ == "__main__":
    raise SystemExit(main(__name__))

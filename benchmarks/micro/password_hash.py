"""What one password hash of the auth service costs on this machine.

    python -m benchmarks.micro.password_hash [--runs 20]

Hashes and verifies ``--runs`` times with ``services/auth/passwords.py``'s
argon2id parameters, after one untimed run: median, min and max of each. A login
costs one verification, a registration one hash. The machine is shared: run it
twice, and quote the lower median.
"""

from __future__ import annotations

import argparse
import statistics
import time

from nexanest.services.auth.passwords import MEMORY_COST_KIB, PARALLELISM, TIME_COST, Passwords

_PASSWORD = "correct horse battery staple"  # noqa: S105 - what is hashed, no secret


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    hasher = Passwords().hasher  # the very hasher the service uses, without the thread hop
    encoded = hasher.hash(_PASSWORD)
    hasher.verify(encoded, _PASSWORD)
    timings: dict[str, list[float]] = {"hash": [], "verify": []}
    for _ in range(args.runs):
        started = time.perf_counter()
        encoded = hasher.hash(_PASSWORD)
        timings["hash"].append(time.perf_counter() - started)
        started = time.perf_counter()
        hasher.verify(encoded, _PASSWORD)
        timings["verify"].append(time.perf_counter() - started)
    print(f"argon2id t={TIME_COST} m={MEMORY_COST_KIB} KiB p={PARALLELISM}, {args.runs} runs")
    for name, seconds in timings.items():
        print(
            f"{name:<6} median {statistics.median(seconds) * 1000:.1f} ms"
            f"  min {min(seconds) * 1000:.1f} ms  max {max(seconds) * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()

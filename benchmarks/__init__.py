"""The benchmarks of issue 5: ``harness`` (shared), ``scenarios`` (the real
consumer under load), ``micro`` (one mechanism each). Run from the repository
root as modules, e.g. ``python -m benchmarks.scenarios.suite --quick``."""

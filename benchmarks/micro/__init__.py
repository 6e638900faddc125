"""Micro-benchmarks: one mechanism each (wire encoding, COPY encoding, publisher
batching, chunk interval, rollup cost), side by side with its alternative."""

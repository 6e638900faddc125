"""Scenario drivers: each runs the consumer itself (``run_consumer`` in process,
or ``nexanest consume`` as a subprocess) against the local stack."""

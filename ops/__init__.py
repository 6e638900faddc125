"""Operator tools built on the pipeline: migrations, verification, dead letters,
maintenance, bar repair, the events tail. Run from the CLI, never from the hot path."""

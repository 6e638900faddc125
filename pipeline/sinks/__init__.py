"""Where batches go: TimescaleDB (durable, with offsets), Redis (latest quotes),
the dead-letter topic (what could not be ingested)."""

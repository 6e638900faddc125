"""Feed adapters and the publisher that puts their ticks on Kafka, keyed by symbol."""

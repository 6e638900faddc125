"""Feed adapters: each yields ``Tick`` batches from one kind of source."""

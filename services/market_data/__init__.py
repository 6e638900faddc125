"""The market_data service."""

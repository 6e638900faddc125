"""The hot path: settings, errors, logging, metrics, the Protocols (``types``),
validation, the consumer loop (``runner``), the offsets it stores (``sinks/
timescale``), retry, the database vocabulary (``db``) and the sinks.

Imports flow one way: ``schemas`` <- ``pipeline`` <- ``ops`` | ``consumers`` |
``producers`` <- ``cli``; nothing here imports an operator tool or the CLI.
"""

"""The pipeline's shared machinery: settings, errors, logging, metrics, the
Protocols (``types``), validation, the consumer loop (``runner``) and the sinks.

Imports flow one way: ``schemas`` <- ``pipeline`` <- ``consumers`` | ``producers``.
The one exception is ``pipeline.cli``, the composition root behind the
``nexanest`` command, which wires consumers and producers together.
"""

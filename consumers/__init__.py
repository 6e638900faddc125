"""Deployable consumers: one module each, wiring settings, clients and sinks
into the loop from ``pipeline.runner``. No logic of their own."""

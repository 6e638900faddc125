"""The service layer: small HTTP services over the project's databases.

Every service is built with ``create_app`` (``app.py``: health and readiness,
OpenAPI, request logging, the lifespan of its connections) and establishes its
acting user with the auth dependency (``tokens.py``: ``BearerAuth``); its settings are the
``services`` group of the one settings object (``pipeline/settings_services.py``). Each
service gets a package of its own here. Imports flow one way: services import
the pipeline and schemas, and only the CLI imports services.
"""

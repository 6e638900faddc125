"""What every benchmark shares, each written once: a run's names and checks
(``run``), host facts (``host``), process sampling (``sampling``), clean-up
(``cleanup``) and results (``report``); ``plots`` runs in ``.venv-bench`` and
imports none of them, so this file imports nothing either."""

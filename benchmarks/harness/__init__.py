"""What every benchmark shares, each written once: ``run`` (names, checks, the frame), ``sampling`` (processes, the
machine), ``cleanup``, ``report``; ``plots`` runs in ``.venv-bench`` and imports none of them, nor does this file."""

"""Where every benchmark script's JSON goes: printed, and saved under
``benchmarks/results/<name>-<local time>.json`` (git-ignored) unless ``output`` names a file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def print_and_save(name: str, result: dict[str, Any], output: Path | None = None) -> Path:
    text = json.dumps(result, indent=2)
    print(text)
    out = output or RESULTS_DIR / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return out

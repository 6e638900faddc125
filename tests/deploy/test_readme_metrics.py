"""README's metrics table lists exactly the metrics the project defines, with
their type and labels, so it cannot drift: every metric is declared in
pipeline/metrics.py (the services' too), and no other module makes one."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from nexanest.pipeline import metrics

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("schemas", "pipeline", "ops", "consumers", "producers", "services", "cli")


def defined() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exposed name -> (type, label names), for every collector pipeline/metrics.py registers."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase | metrics.AgeGauge):
            continue
        (family,) = value.describe()
        name = f"{family.name}_total" if family.type == "counter" else family.name
        found[name] = (family.type, tuple(getattr(value, "_labelnames", ())))
    return found


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| metric | type | labels | what it is for |") :]
    table = table[: table.index("\n\n")]
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in table.splitlines()[2:]:
        name, kind, labels = (cell.strip() for cell in line.split("|")[1:4])
        key = name.strip("`")
        assert key not in rows, key
        rows[key] = (kind, tuple(re.findall(r"`(\w+)`", labels.split("(")[0])))
    return rows


def test_the_readme_table_lists_exactly_the_defined_metrics_with_type_and_labels() -> None:
    ours = defined()
    assert len(ours) >= 18
    assert documented() == ours


def test_no_module_but_pipeline_metrics_defines_a_metric() -> None:
    maker = re.compile(r"\b(Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*\"nexanest_")
    elsewhere = [
        str(path.relative_to(REPO))
        for top in SOURCES
        for path in (REPO / top).rglob("*.py")
        if path != REPO / "pipeline/metrics.py" and maker.search(path.read_text())
    ]
    assert elsewhere == []
    assert maker.search((REPO / "pipeline/metrics.py").read_text())  # the pattern finds what it is for


def test_the_table_check_finds_a_missing_row() -> None:
    ours = defined()
    ours["nexanest_not_documented_total"] = ("counter", ())
    assert documented() != ours

"""What ``nexanest status`` found (``StatusReport``), and how it is shown: the
text report, or every field as JSON (``to_json``, for scripts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nexanest.ops.status_pipeline import PartitionLag
from nexanest.ops.status_services import ServiceStatus


@dataclass
class StatusReport:
    checked_at: str
    services: list[ServiceStatus] = field(default_factory=list)
    topic: str = ""
    consumer_group: str = ""
    lag: list[PartitionLag] = field(default_factory=list)
    lag_error: str | None = None
    ticks_per_second: float | None = None
    newest_tick_age_s: float | None = None
    ticks_error: str | None = None
    dlq_topic: str = ""
    dlq_size: int | None = None
    dlq_error: str | None = None
    backup_dir: str = ""
    last_backup: str | None = None
    last_backup_time: str | None = None

    @property
    def down(self) -> list[str]:
        """The required services that are down."""
        return [s.name for s in self.services if s.required and not s.up]

    @property
    def ok(self) -> bool:
        return not self.down

    @property
    def total_lag(self) -> int | None:
        return None if self.lag_error else sum(p.lag_messages for p in self.lag)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["down"] = self.down
        out["total_lag"] = self.total_lag
        return out


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def format_status(report: StatusReport) -> str:
    rows = [
        (
            s.name,
            str(s.port) if s.port else "-",
            "up" if s.up else "DOWN",
            s.version or "-",
            s.detail or s.error or "",
            "" if s.required else "(optional)",
        )
        for s in report.services
    ]
    widths = [max(len(r[i]) for r in [("service", "port", "state", "version", "detail", ""), *rows]) for i in range(4)]
    out = [f"nexanest status at {report.checked_at}", ""]
    header = ("service", "port", "state", "version")
    out.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + "  detail")
    for r in rows:
        line = "  ".join(v.ljust(w) for v, w in zip(r[:4], widths, strict=True))
        out.append(f"{line}  {r[4]} {r[5]}".rstrip())
    out.append("")
    out.append(f"consumer group {report.consumer_group} on {report.topic}:")
    if report.lag_error:
        out.append(f"  lag unknown: {report.lag_error}")
    elif not report.lag:
        out.append("  topic has no partitions (not created yet)")
    else:
        out.append(f"  {'partition':>9}  {'end':>12}  {'consumed':>12}  {'lag msgs':>10}  {'lag time':>9}")
        for p in report.lag:
            consumed = "-" if p.consumed_offset is None else f"{p.consumed_offset:,}"
            out.append(
                f"  {p.partition:>9}  {p.end_offset:>12,}  {consumed:>12}  {p.lag_messages:>10,}  "
                f"{format_duration(p.lag_seconds):>9}"
            )
        out.append(f"  {'total':>9}  {'':>12}  {'':>12}  {report.total_lag or 0:>10,}")
    out.append("")
    label = 18
    if report.ticks_error:
        out.append(f"{'ticks/s (60 s)':<{label}}unknown: {report.ticks_error}")
        out.append(f"{'newest tick age':<{label}}unknown")
    else:
        out.append(f"{'ticks/s (60 s)':<{label}}{report.ticks_per_second or 0:,.1f}")
        age = format_duration(report.newest_tick_age_s)
        out.append(f"{'newest tick age':<{label}}{age if report.newest_tick_age_s is not None else 'none in 1h'}")
    dlq = f"unknown: {report.dlq_error}" if report.dlq_error else f"{report.dlq_size:,} messages"
    out.append(f"{'DLQ size':<{label}}{dlq} ({report.dlq_topic})")
    backup = (
        f"{report.last_backup_time} ({report.last_backup})" if report.last_backup else f"none in {report.backup_dir}"
    )
    out.append(f"{'last backup':<{label}}{backup}")
    out.append("")
    out.append("all required services up" if report.ok else f"DOWN: {', '.join(report.down)}")
    return "\n".join(out)

"""What the machine does: child processes sampled from ``/proc`` while they run
(``Processes``, the one process driver of every scenario: N ``nexanest consume``
at once, one under a profiler, a tool), statistics of samples, and the machine and
services a run reports beside its figures, with the restarts that void them
(other sessions on this shared machine run fault tests)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg

from nexanest.consumers.ticks_to_timescale import open_quotes_redis
from nexanest.pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NEXANEST = Path(sys.executable).parent / "nexanest"
_CONSUMED = re.compile(r"consumed ([\d,]+) messages in ([\d,]+) batches: ([\d,]+) rows written, ([\d,]+) dead-lettered")


def consume_argv(idle_s: float) -> list[str]:
    """The real consumer command, stopping after ``idle_s`` without records."""
    return [str(NEXANEST), "consume", "--until-idle", f"{idle_s:g}"]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in kB (empty once it has exited)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    fields = (ln.partition(":") for ln in text.splitlines())
    return {k: int(v.split()[0]) for k, _, v in fields if k in ("VmRSS", "VmHWM")}


@dataclass
class Proc:
    """One child: its output, exit, exact CPU seconds (wait4), RSS samples and peak RSS (VmHWM from /proc:
    wait4's ru_maxrss would count the parent's pages the child held between its fork and its exec)."""

    popen: subprocess.Popen[bytes]
    files: tuple[IO[bytes], IO[bytes]]
    started_at: float = field(default_factory=time.time)
    exited_at: float | None = None
    exit_code: int | None = None
    cpu_s: float = 0.0
    peak_rss_kb: int = 0
    stdout: str = ""
    stderr: str = ""
    #: (seconds since start, VmRSS kB, VmHWM kB)
    rss: list[tuple[float, int, int]] = field(default_factory=list)

    def reap(self) -> None:
        """Blocking (run in a thread): wait for the child, keep its rusage and output."""
        _, status, usage = os.wait4(self.popen.pid, 0)
        self.exited_at = time.time()
        self.exit_code = self.popen.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_s = usage.ru_utime + usage.ru_stime
        for f in self.files:
            f.seek(0)
        self.stdout, self.stderr = (f.read().decode(errors="replace") for f in self.files)
        for f in self.files:
            f.close()

    def consumed(self) -> dict[str, int]:
        """The summary line of ``nexanest consume``: messages, batches, rows written, dead-lettered."""
        m = _CONSUMED.search(self.stdout)
        if m is None:
            raise RuntimeError(f"no 'consumed' line from the consumer (exit {self.exit_code}): {self.stderr[-2000:]}")
        keys = ("consumed", "batches", "written", "dead_lettered")
        return dict(zip(keys, (int(g.replace(",", "")) for g in m.groups()), strict=True))

    def check_exit(self) -> None:
        if self.exit_code != 0:
            raise RuntimeError(f"{self.popen.args!r} exited {self.exit_code}: {self.stderr[-2000:]}")


class Processes:
    """Children started at once, their RSS read from /proc every ``interval_s``
    while they run; killed by their own pids on a timeout, an error or a
    cancellation. Output goes to files, so a chatty child never blocks on a pipe."""

    def __init__(
        self, argvs: Sequence[Sequence[str]], env: Mapping[str, str], interval_s: float = 0.05, cwd: Path = ROOT
    ) -> None:
        self.interval_s = interval_s
        self.procs = []
        for argv in argvs:
            files = (tempfile.TemporaryFile(), tempfile.TemporaryFile())  # noqa: SIM115 - Proc.reap closes them
            popen = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdout=files[0], stderr=files[1])
            self.procs.append(Proc(popen, files))

    async def wait(self, timeout_s: float) -> list[Proc]:
        reapers = {asyncio.ensure_future(asyncio.to_thread(p.reap)) for p in self.procs}
        try:
            async with asyncio.timeout(timeout_s):
                while not all(r.done() for r in reapers):
                    for p in self.procs:
                        if p.exit_code is None and "VmRSS" in (s := proc_status(p.popen.pid)):
                            p.rss.append((time.time() - p.started_at, s["VmRSS"], s.get("VmHWM", 0)))
                            p.peak_rss_kb = max(p.peak_rss_kb, s["VmRSS"], s.get("VmHWM", 0))
                    await asyncio.wait(reapers, timeout=self.interval_s)
            await asyncio.gather(*reapers)
        except BaseException:
            self.kill()
            raise
        return self.procs

    def kill(self, signum: int = 9) -> None:
        for p in self.procs:
            if p.exit_code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.popen.pid, signum)  # our own child; its reaping thread then returns

    def terminate(self) -> None:
        """SIGTERM: a ``nexanest`` command finishes what it has in hand and exits 0."""
        self.kill(15)


async def run_sampled(argv: Sequence[str], env: Mapping[str, str], timeout_s: float = 900) -> Proc:
    """One child to completion, sampled."""
    return (await Processes([argv], env).wait(timeout_s))[0]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5))) - 1]


@contextlib.contextmanager
def observed(*children: Any) -> Iterator[list[tuple[array[float], array[float]]]]:
    """Every value the pipeline observes into these histograms (``metrics`` children),
    each with its time, while the block runs (a histogram keeps only bucket counts).
    Arrays of doubles, not tuples: hundreds of thousands of objects would lengthen
    every garbage collection of this process, which runs the consumer."""
    out: list[tuple[array[float], array[float]]] = []
    for child in children:
        at, values, observe = array("d"), array("d"), child.observe

        def record(amount: float, exemplar: Any = None, *, _a: Any = at, _v: Any = values, _o: Any = observe) -> None:
            _a.append(time.monotonic())
            _v.append(amount)
            _o(amount, exemplar)

        child.observe = record  # an instance attribute, deleted below
        out.append((at, values))
    try:
        yield out
    finally:
        for child in children:
            del child.observe


KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_SHOW = {"postgresql": "server_version", "timescaledb_license": "timescaledb.license"}
_SHOW |= {name: name for name in ("synchronous_commit", "shared_buffers", "max_wal_size")}


async def _server(settings: Settings) -> tuple[asyncpg.Record, dict[str, Any]]:
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    redis = open_quotes_redis(settings)
    try:
        return await conn.fetchrow("SELECT pg_postmaster_start_time()::text AS started"), dict(
            await redis.info("server")
        )
    finally:
        await conn.close()
        await redis.aclose()


def host() -> dict[str, Any]:
    """Cores, memory, CPU, Python and load: the facts of a run that uses no service."""
    meminfo, cpuinfo = (Path(f"/proc/{name}").read_text() for name in ("meminfo", "cpuinfo"))
    cpu = next((ln.split(":")[1].strip() for ln in cpuinfo.splitlines() if "model name" in ln), platform.processor())
    memory = round(int(meminfo.split()[meminfo.split().index("MemTotal:") + 1]) / 2**20, 1)
    facts = {"cores": os.cpu_count(), "memory_gib": memory, "cpu": cpu, "python": platform.python_version()}
    return facts | {"load_avg_at_start": os.getloadavg()}


async def machine(settings: Settings) -> dict[str, Any]:
    """``host`` and the services' versions and database settings, once at the start of a run."""
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    try:
        shown = {key: await conn.fetchval(f"SHOW {name}") for key, name in _SHOW.items()}
        ext = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    finally:
        await conn.close()
    status = await asyncio.create_subprocess_exec(str(KAFKA_SH), "status", stdout=asyncio.subprocess.PIPE)
    words = [*(await status.communicate())[0].decode().split(), "version", "unknown"]
    redis = (await _server(settings))[1]["redis_version"]
    return host() | shown | {"kafka": words[words.index("version") + 1], "redis": redis, "timescaledb": ext}


def cpu_s(pid: int, *, reaped_children: bool = True) -> float | None:
    """utime + stime (+ the children it has waited for) of a live process, in seconds (/proc)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    f = text[text.rfind(")") + 2 :].split()
    return None if f[0] == "Z" else sum(int(x) for x in f[11 : 15 if reaped_children else 13]) / CLK_TCK


def state_dir() -> Path:
    """deploy/local's state directory (its run/ holds the services' pid files)."""
    default = "/var/lib/nexanest" if os.geteuid() == 0 else str(Path.home() / ".local/share/nexanest")
    return Path(os.environ.get("NEXANEST_STATE_DIR", default))


def pid_of(service: str) -> int | None:
    """A local service's pid, from deploy/local's state directory."""
    path = state_dir() / ("timescaledb/postmaster.pid" if service == "timescaledb" else f"run/{service}.pid")
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


async def service_identities(settings: Settings) -> dict[str, str]:
    """Something that changes when a service restarts."""
    pg, redis = await _server(settings)
    return {"timescaledb": pg["started"], "redis": str(redis["run_id"]), "kafka": str(pid_of("kafka"))}


def restarted(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before if before[k] != after.get(k))

"""Secrets stay off command lines (issue 9, part 5).

A process's command line is readable by every local user (``ps``,
``/proc/<pid>/cmdline``); its environment and a mode-600 file are not. The
scripts and the compose file therefore hand passwords to psql through its
environment (``\\getenv``), to Redis through a config file, to clients through
``PGPASSWORD``/``REDISCLI_AUTH``. Two checks:

- statically, every shell script, the Makefile and the compose file: no secret
  is expanded into the arguments of a program (assignments, environment
  prefixes, heredocs and calls of the scripts' own shell functions are fine:
  none of them is an argv), and no flag known to carry a secret is used;
- at run time, no process on the machine (the running postgres, redis-server
  and Kafka among them) has a password from ``.env`` on its command line.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
SCRIPTS = sorted([*REPO.glob("deploy/**/*.sh"), REPO / ".ci/run"])

#: Flags whose value is a secret: psql variables named like one, Redis's password options.
_SECRET_FLAGS = re.compile(r"-v\s+['\"]?\w*(pw|pass|secret|token)\w*=|--requirepass|redis-cli\b.*\s-a\s", re.IGNORECASE)
#: Variables that hold a secret by name.
_SECRET_NAME = re.compile(r"pw|pass|secret|token", re.IGNORECASE)
#: A secret read from .env by the scripts' helper.
_SECRET_READ = re.compile(r"\$\(env_value\s+\w*(?:PASSWORD|DSN|URL)\w*\)")
_FUNCTION = re.compile(r"^\s*(\w+)\s*\(\)\s*\{", re.MULTILINE)
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
_LEADING_ASSIGNMENTS = re.compile(r"""^\s*(?:local\s+|export\s+)?(?:\w+=(?:"[^"]*"|'[^']*'|\$\([^)]*\)|\S+)\s+)*""")


def shell_functions(*texts: str) -> set[str]:
    return {name for text in texts for name in _FUNCTION.findall(text)}


def shell_violations(text: str, functions: set[str] | None = None) -> list[str]:
    """Lines of a shell script that put a secret into a program's arguments.
    ``functions``: shell functions it may call (its own, and those of a library
    it sources); their arguments are no process's argv."""
    functions = shell_functions(text) | (functions or set())
    tainted = set(re.findall(r"(\w+)=\"?" + _SECRET_READ.pattern, text))
    tainted |= {name for name in re.findall(r"\b(\w+)=", text) if _SECRET_NAME.search(name)}
    expansion = re.compile(r"\$\{?(" + "|".join(sorted(tainted)) + r")\b") if tainted else None
    problems: list[str] = []
    heredoc_end: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if heredoc_end is not None:  # a heredoc is stdin or a file, never an argv
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        code = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        code = _FUNCTION.sub("", code)  # a one-line function: its body
        if opener := _HEREDOC.search(code):
            heredoc_end = opener[2]
            code = code[: opener.start()]
        if _SECRET_FLAGS.search(code):
            problems.append(f"{number}: a flag that carries a secret: {line.strip()}")
            continue
        secret = _SECRET_READ.search(code) or (expansion.search(code) if expansion else None)
        if secret is None:
            continue
        leading = _LEADING_ASSIGNMENTS.match(code)
        assert leading is not None  # the pattern also matches no assignment at all
        rest = code[leading.end() :]
        if secret.start() < len(code) - len(rest):
            continue  # in an assignment or an environment prefix
        words = rest.split()
        if words and words[0] in functions:
            continue  # a shell function: its arguments are no process's argv
        problems.append(f"{number}: a secret in a command's arguments: {line.strip()}")
    return problems


def compose_violations(text: str) -> list[str]:
    """Lines of a compose file that interpolate a secret anywhere but as the
    value of an environment variable (compose expands ``${…}`` before a command
    runs, so one in ``command:`` lands on the container's command line)."""
    secret = re.compile(r"(?<!\$)\$\{?NEXANEST_\w*(PASSWORD|DSN|URL)")
    environment_entry = re.compile(r"^\s+[A-Z][A-Z0-9_]*:\s*['\"]?\$\{NEXANEST_\w+")
    return [
        f"{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), 1)
        if not line.lstrip().startswith("#") and secret.search(line) and not environment_entry.match(line)
    ]


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_script_puts_a_secret_on_a_command_line(path: Path) -> None:
    library = shell_functions((REPO / "deploy/local/lib.sh").read_text())
    assert shell_violations(path.read_text(), library) == []


def test_the_makefile_passes_passwords_in_the_environment_only() -> None:
    recipes = [line for line in (REPO / "Makefile").read_text().splitlines() if line.startswith("\t")]
    assert not [line for line in recipes if _SECRET_FLAGS.search(line)]
    # The one way it hands over a password: PGPASSWORD=… in front of psql.
    assert [line for line in recipes if "PASSWORD" in line] == [
        line for line in recipes if re.match(r"\t@?PGPASSWORD=\$\$\(grep -E '\^NEXANEST_\w+_PASSWORD=' \.env", line)
    ]


def test_compose_puts_no_secret_on_a_command_line() -> None:
    text = (REPO / "deploy/docker-compose.yml").read_text()
    assert compose_violations(text) == []
    assert "requirepass" in text  # Redis still gets its password, from a config file


def test_the_checks_find_what_they_are_for() -> None:
    """What the scripts and compose file did before (issue 9) is found."""
    old_role = """pg_ensure_role() {
  local port=$1 role=$2 password=$3 attrs=${4:-}
  pg_sql "$port" postgres -v role="$role" -v pw="$password" <<EOF
SELECT 1
EOF
}"""
    assert len(shell_violations(old_role)) == 1
    assert len(shell_violations('ts_pw=$(env_value NEXANEST_TIMESCALE_PASSWORD)\nsome_tool --pw "$ts_pw"\n')) == 1
    assert len(shell_violations('mysql -p"$(env_value NEXANEST_POSTGRES_PASSWORD)"\n')) == 1
    assert shell_violations("REDISCLI_AUTH=$(env_value NEXANEST_REDIS_PASSWORD) redis-cli ping\n") == []
    old_redis = '    command: ["redis-server", "--requirepass", "${NEXANEST_REDIS_PASSWORD:?run env.sh}"]\n'
    assert len(compose_violations(old_redis)) == 1
    assert compose_violations("      POSTGRES_PASSWORD: ${NEXANEST_POSTGRES_PASSWORD:?x}\n") == []


def env_secrets(env_file: Path) -> set[str]:
    """Every password in ``.env``: the plain ones and those inside DSNs and URLs."""
    found: set[str] = set()
    for line in env_file.read_text().splitlines():
        key, _, value = line.partition("=")
        if not key.startswith("NEXANEST_") or not value:
            continue
        if key.endswith("PASSWORD"):
            found.add(value)
        elif "://" in value and urlsplit(value).password:
            found.add(str(urlsplit(value).password))
    return {s for s in found if len(s) >= 8}


def command_lines() -> dict[int, bytes]:
    lines = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                lines[int(proc.name)] = (proc / "cmdline").read_bytes()
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return lines


@pytest.mark.integration
def test_no_running_process_has_a_password_on_its_command_line(stack: object) -> None:
    secrets = env_secrets(REPO / ".env")
    assert len(secrets) >= 4, "the four passwords of .env"
    lines = command_lines()
    # The services are among the processes looked at (not a check of nothing).
    services = {
        "postgres": rb"postgres\x00-D\x00",
        "redis": rb"^redis-server",
        "kafka": rb"kafka\.Kafka",
    }
    for name, pattern in services.items():
        assert any(re.search(pattern, line) for line in lines.values()), f"no {name} process found"
    exposed = [pid for pid, line in lines.items() if any(s.encode() in line for s in secrets)]
    assert exposed == [], f"processes with a password on their command line: {exposed}"

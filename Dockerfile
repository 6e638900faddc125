# The NexaNest image the Helm chart runs (deploy/helm/nexanest): the `nexanest`
# command, whose subcommands are the consumer, the producer, the services and
# the migrations. Built from this clone, with the versions pinned in constraints.txt:
#   docker build -t nexanest:0.1.0 .
# Never built on the development machines or in CI (no Docker engine there).

# --- build: the package and its dependencies into a virtual environment ---------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/nexanest
WORKDIR /src
# Dependencies first (their layer is reused while only the code changes): every
# runtime dependency at its pinned version, from wheels.
COPY pyproject.toml constraints.txt README.md ./
RUN /opt/nexanest/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' >/tmp/runtime.txt \
 && /opt/nexanest/bin/pip install --only-binary=:all: -c constraints.txt -r /tmp/runtime.txt
COPY schemas schemas
COPY pipeline pipeline
COPY ops ops
COPY consumers consumers
COPY producers producers
COPY cli cli
COPY services services
RUN /opt/nexanest/bin/pip install --no-deps -c constraints.txt . \
 && /opt/nexanest/bin/nexanest --help >/dev/null

# --- run: the environment alone, as an unprivileged user ------------------------
FROM python:3.11-slim-bookworm
RUN groupadd --gid 10001 nexanest \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nexanest
COPY --from=build /opt/nexanest /opt/nexanest
ENV PATH=/opt/nexanest/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# An empty working directory: no .env is read there; settings come from the environment.
WORKDIR /var/empty/nexanest
USER 10001:10001
ENTRYPOINT ["nexanest"]
CMD ["--help"]

# The project's code image: what `dg scaffold build-artifacts` lays out (uv's multi-stage
# example), on the same uv.lock, for Dagster open source (no dagster-cloud). See deploy/README.md.

# Build stage: the locked environment, plus the parsed dbt project baked into the image.
FROM ghcr.io/astral-sh/uv:0.13.8-python3.11-bookworm-slim AS builder
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=0
WORKDIR /app
# dagster-dbt runs `dbt` from PATH when dg refreshes the component's state below.
ENV PATH="/app/.venv/bin:$PATH"
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-install-project --group dev --group deploy
COPY . /app
# A deployed code server never parses dbt: the manifest and the component's state are built
# here, once (dg needs the dev group), and then the dev group is removed again. The deploy
# group adds the webserver and dagster-docker (deploy/compose runs every process from this
# image) and dagster-k8s (run pods started by the K8sRunLauncher).
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --group dev --group deploy \
    && .venv/bin/dg utils refresh-defs-state \
    && uv sync --frozen --no-dev --group deploy

# Final stage: the same Python, without uv.
FROM python:3.11-slim-bookworm
COPY --from=builder /app /app
ENV PATH="/app/.venv/bin:$PATH" \
    DBT_TARGET=prod \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
# The Helm chart's user-code deployment starts this gRPC server (dagsterApiGrpcArgs repeat it);
# run workers start from the same image.
EXPOSE 3030
CMD ["dagster", "code-server", "start", "--host", "0.0.0.0", "--port", "3030", \
     "--module-name", "dbt_automation_demo.definitions"]

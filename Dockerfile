# syntax=docker/dockerfile:1
#
# ami-exporter: Prometheus exporter for the Asterisk Manager Interface.
#   docker build -t ami-exporter \
#     --build-arg VERSION="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')" .
#   docker run -p 9815:9815 ami-exporter --web.listen-address=:9815 ...

# ---- builder: build wheels for the project and its dependencies ----------------------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Pinned build frontend and backend; --no-isolation below makes build use exactly these.
RUN pip install --no-cache-dir "build==1.6.1" "setuptools==84.2.1"

COPY pyproject.toml README.md LICENSE MANIFEST.in ./
COPY src/ ./src/

# The wheel `python -m build` makes (tests/test_packaging.py installs and runs that one), then
# the wheels of its dependencies beside it.
RUN python -m build --wheel --no-isolation --outdir /dist . \
    && pip wheel --no-cache-dir --wheel-dir /wheels /dist/ami_exporter-*.whl

# ---- runtime: only the wheels, no compiler, no source tree ----------------------------------
FROM python:3.11-slim

# The image label only; the version itself is written once, in pyproject.toml.
ARG VERSION=unset
LABEL org.opencontainers.image.title="ami-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the Asterisk Manager Interface (AMI): channels, calls, originates, hangup causes and AMI health" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Install the project wheel; its dependencies come from the wheels built next to it, never
# from an index. The wheels are bind-mounted from the builder, so they add no layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/ami_exporter-*.whl

USER 65532:65532

EXPOSE 9815

ENTRYPOINT ["ami-exporter"]
CMD ["--web.listen-address=:9815"]

# NextBest service image: one image for the API (`nextbest serve`, the default), the stream
# worker (`nextbest stream`), one-shot jobs (`nextbest train`, `generate`, `load`, `audit ...`)
# and, in compose.yaml, the MLflow tracking server (same mlflow version as the clients).
#
#   docker build -t nextbest:local .
#
# Needs BuildKit (the default builder since Docker 23) for the pip cache mount.

# Both stages must use the same Python: the venv's interpreter is a symlink into the base image.
# Pinned by tag (Python minor + Debian release), not by digest, so security rebuilds still land.
ARG PYTHON_IMAGE=python:3.11-slim-trixie

# --- builder: resolve and install everything into /opt/venv -----------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that editing the code does not reinstall
# feast, mlflow, lightgbm and pyarrow (the slow layer). The cache mount keeps downloaded wheels
# between builds without putting them into any layer.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# Then the project itself, as a regular (non-editable) wheel install; package data such as
# consent/*.yaml comes along through pyproject.toml. README.md* is optional (pyproject names it).
COPY README.md* ./
COPY service ./service
COPY training ./training
COPY feature_repo ./feature_repo
COPY consent ./consent
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
 && pip check

# --- runtime: the venv and the one system library it needs -------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# LightGBM's native library links against the GNU OpenMP runtime, which slim images lack.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

# Fixed uid/gid so volume ownership and Kubernetes runAsUser are predictable. The state folder is
# created here, owned by that user, so a fresh named volume mounted on it inherits the ownership.
RUN groupadd --system --gid 10001 nextbest \
 && useradd --system --uid 10001 --gid nextbest --home-dir /var/lib/nextbest --no-create-home \
        --shell /usr/sbin/nologin nextbest \
 && install -d -o nextbest -g nextbest -m 0750 /var/lib/nextbest

COPY --from=builder /opt/venv /opt/venv

# NEXTBEST_HOME holds the Feast registry, the offline Parquet parts and the MLflow artifacts:
# mount a volume shared by the api, worker and job containers here (see compose.yaml).
# NEXTBEST_API_HOST: the default 127.0.0.1 would be unreachable from outside the container.
# MLflow 3 reports usage telemetry by default; a bank's deployment must not phone home.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NEXTBEST_HOME=/var/lib/nextbest \
    NEXTBEST_API_HOST=0.0.0.0 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true

WORKDIR /var/lib/nextbest
USER 10001:10001
EXPOSE 8080

# Liveness of the API only (/readyz also checks dependencies, which would make a short database
# outage restart the API). No curl in slim images, so Python's urllib does the request; it exits
# non-zero on a refused connection or a non-2xx answer. Containers that do not serve HTTP (the
# stream worker, jobs) disable or override this in compose.yaml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('NEXTBEST_API_PORT', '8080'), timeout=4)"]

CMD ["nextbest", "serve"]

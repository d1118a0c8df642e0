# The gateway as a container image.
# NOTE: written with care but never built: the machines this project is developed on have
# no Docker engine. Build with `docker build -t gateway .` and run with
#   docker run -p 8080:8080 -p 9090:9090 -v gateway-data:/var/lib/gateway \
#     -v $PWD/config.yaml:/etc/gateway/config.yaml:ro gateway
# The config must listen on 0.0.0.0 inside the container (GATEWAY_LISTEN_HOST and
# GATEWAY_ADMIN_HOST below do that) and point the database at /var/lib/gateway.
FROM python:3.11-slim AS build
# A C compiler for the compiled hot path (setup.py: gateway/http/heads.py through
# Cython); the image's Python carries its headers. The runtime stage needs neither:
# it installs the wheel built here.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY gateway ./gateway
COPY upstream_example ./upstream_example
COPY templates ./templates
RUN python -m pip install --no-cache-dir --upgrade pip \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/gateway gateway \
 && mkdir -p /var/lib/gateway /etc/gateway && chown gateway /var/lib/gateway
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config.yaml /etc/gateway/config.yaml
ENV GATEWAY_CONFIG=/etc/gateway/config.yaml \
    GATEWAY_DATABASE_URL=sqlite:////var/lib/gateway/gateway.db \
    GATEWAY_LISTEN_HOST=0.0.0.0 \
    GATEWAY_ADMIN_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
USER gateway
VOLUME ["/var/lib/gateway"]
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz')"
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
CMD ["serve"]

# Tenantry's image for those with Docker: the same as `make image` (which needs
# no daemon; see hack/image.sh): Debian bookworm's packages from
# hack/image-packages.txt, Tenantry installed from wheels pinned by
# constraints.txt by the same script (hack/image-venv.sh), helm, user 10001.
#   docker build --platform linux/amd64 -t tenantry:0.1.0 .

FROM --platform=linux/amd64 golang:1.24-bookworm AS helm
ARG HELM_VERSION=v3.19.5
RUN CGO_ENABLED=0 GOBIN=/out go install -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
      helm.sh/helm/v3/cmd/helm@${HELM_VERSION}

FROM --platform=linux/amd64 debian:bookworm-slim AS wheels
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md constraints.txt hack/image-constraints.txt /src/
COPY license /src/license
COPY core /src/core
COPY db /src/db
COPY operator /src/operator
COPY api /src/api
COPY cli /src/cli
COPY sdk /src/sdk
# operator/charts/customer-instance is a link in the checkout: the chart itself.
COPY charts/customer-instance /src/operator/charts/customer-instance
RUN python3 -m venv /build && /build/bin/pip wheel --no-deps -w /wheels /src \
    && /build/bin/pip download --dest /wheels --only-binary=:all: \
       --constraint /src/constraints.txt --constraint /src/image-constraints.txt \
       "tenantry[server] @ file://$(ls /wheels/tenantry-*.whl)"

FROM --platform=linux/amd64 debian:bookworm-slim
COPY hack/image-packages.txt /tmp/build/
RUN apt-get update \
    && grep -v '^\s*#' /tmp/build/image-packages.txt | grep -v '^\s*$' \
       | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
    && echo 'tenantry:x:10001:10001:Tenantry:/tmp:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'tenantry:x:10001:' >> /etc/group
COPY --from=wheels /wheels /tmp/build/wheels
COPY constraints.txt hack/image-constraints.txt hack/image-venv.sh /tmp/build/
RUN sh /tmp/build/image-venv.sh /tmp/build/wheels /tmp/build/constraints.txt \
       /tmp/build/image-constraints.txt \
    && rm -rf /tmp/build
COPY --from=helm /out/helm /usr/local/bin/helm
ENV PATH=/opt/tenantry/venv/bin:/usr/local/bin:/usr/bin:/bin HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8080 8081
ENTRYPOINT ["/opt/tenantry/venv/bin/tenantry"]

# Build tollgate and ship it on a slim Debian base (used by compose/docker-compose.yml).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/tollgate /tollgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates wget && rm -rf /var/lib/apt/lists/*
COPY --from=build /tollgate /usr/local/bin/tollgate
# A named volume mounted at one of these takes its ownership on first use, so the unprivileged user can
# write there: its data (/var/lib/tollgate) and the registry's certificate bundle (/var/lib/tollgate-registry,
# `registry-config --out-dir` in compose/).
RUN mkdir -p /var/lib/tollgate /var/lib/tollgate-registry \
    && chown 65534:65534 /var/lib/tollgate /var/lib/tollgate-registry
USER 65534:65534
# 5001: /token and friends; 9101: /metrics when server.metrics_listen is set (compose).
EXPOSE 5001 9101
ENTRYPOINT []
CMD ["tollgate", "serve", "--config", "/etc/tollgate/tollgate.yaml"]

# The operator/uploader image for those who build with Docker: the release binary on distroless's
# cc image (glibc, libgcc, CA certificates, user nonroot 65532, no shell). `make image` builds the
# equivalent without Docker, reproducibly, from pinned Debian packages (README: "The image").
#   docker build -t REGISTRY/outbound:TAG --build-arg VERSION=TAG --build-arg REVISION=$(git rev-parse HEAD) .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crates and the build between runs: a rebuild compiles only what changed.
# Debug info out, symbols kept (backtraces still name functions), as make image does.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin outbound \
 && strip --strip-debug -o /outbound target/release/outbound

FROM gcr.io/distroless/cc-debian12:nonroot
ARG REVISION=unknown
ARG VERSION=unknown
LABEL org.opencontainers.image.source=https://github.com/outbound-dev/outbound \
      org.opencontainers.image.revision=$REVISION \
      org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.licenses=Apache-2.0
COPY --from=build /outbound /usr/local/bin/outbound
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/local/bin/outbound"]

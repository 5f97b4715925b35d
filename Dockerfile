# syntax=docker/dockerfile:1
# A small image: a static-ish release binary on distroless, as a non-root
# user. Config and secrets come from mounted volumes:
#   /etc/gatehouse/gatehouse.toml   (default: config/examples/production.toml)
#   /etc/gatehouse/tls/tls.crt, tls.key
#   /etc/gatehouse/users/users      (name:$argon2id$... lines)
# or point GATEHOUSE_CONFIG at another file.
#
#   docker build -t gatehouse .
#   docker run -p 8443:8443 \
#     -v "$PWD/tls:/etc/gatehouse/tls:ro" -v "$PWD/users:/etc/gatehouse/users:ro" gatehouse

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not refetch the registry.
# Every target Cargo.toml declares must exist for the manifest to load, so
# the benches, examples and tests come along (tests/it/container.rs checks
# this stage against Cargo.toml).
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY examples ./examples
COPY tests ./tests
RUN mkdir -p src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo fetch --locked
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin gatehouse

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/gatehouse /usr/local/bin/gatehouse
COPY config/examples/production.toml /etc/gatehouse/gatehouse.toml
ENV GATEHOUSE_CONFIG=/etc/gatehouse/gatehouse.toml
# Numeric, so that Kubernetes can check `runAsNonRoot` (it cannot resolve a
# user name inside the image): 65532 is distroless's nonroot.
USER 65532:65532
EXPOSE 8443
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/gatehouse", "healthcheck", "--timeout", "3s"]
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["serve"]

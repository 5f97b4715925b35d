# syntax=docker/dockerfile:1
# Build: docker build -t gatehouse .
# Run:   docker run -p 8443:8443 -v "$PWD/secrets:/etc/gatehouse/mounted:ro" \
#          -e GATEHOUSE_CONFIG=/etc/gatehouse/mounted/gatehouse.toml gatehouse
# (or mount tls/ and users next to the built-in /etc/gatehouse/gatehouse.toml).

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not refetch the registry.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo fetch --locked && rm -rf src
COPY src ./src
RUN cargo build --release --locked --bin gatehouse

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/gatehouse /usr/local/bin/gatehouse
COPY config/examples/container.toml /etc/gatehouse/gatehouse.toml
ENV GATEHOUSE_CONFIG=/etc/gatehouse/gatehouse.toml
USER nonroot:nonroot
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["serve"]

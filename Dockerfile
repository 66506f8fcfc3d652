# Multi-stage build of the one `wamesh` binary; every service runs from this image with its
# own command (`wamesh gateway`, `wamesh messaging`, ...).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p wamesh && cp target/release/wamesh /usr/local/bin/wamesh

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 wamesh
COPY --from=build /usr/local/bin/wamesh /usr/local/bin/wamesh
USER 10001
ENTRYPOINT ["/usr/local/bin/wamesh"]
CMD ["dev"]

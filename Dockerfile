# tapedeck as a container image: the binary only, on a small Debian base, as a non-root
# user.
#
#   docker build -t tapedeck:0.1 .
#   docker run --rm tapedeck:0.1 --version
#
# Multi-stage: the build stage has the Rust toolchain; the runtime stage has the binary,
# CA certificates (for https upstreams and targets) and nothing else.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tapedeck \
 && strip target/release/tapedeck \
 && cp target/release/tapedeck /usr/local/bin/tapedeck

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin tapedeck \
 && install -d -m 0700 -o tapedeck -g tapedeck /captures
COPY --from=build /usr/local/bin/tapedeck /usr/local/bin/tapedeck
USER 10001:10001
# Captures go here (mount a volume); the proxy listens on 8080, its admin on 9091.
VOLUME ["/captures"]
EXPOSE 8080 9091
ENTRYPOINT ["/usr/local/bin/tapedeck"]
CMD ["--help"]

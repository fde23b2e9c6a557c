# actormq in a container: `docker build -t actormq .` then
#   docker run -p 7670:7670 -p 61613:61613 -v actormq-data:/var/lib/actormq actormq
# Settings: ACTORMQ__SECTION__KEY variables (-e), or profiles mounted on /etc/actormq
# (`docker run … actormq broker --profile NAME`).

# Build stage: the release binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin actormq \
    && strip target/release/actormq

# Final stage: the binary, the profiles, a user that is not root, the data in a volume.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/actormq --shell /usr/sbin/nologin actormq \
    && install -d -o actormq -g actormq /var/lib/actormq /etc/actormq
COPY --from=build /src/target/release/actormq /usr/local/bin/actormq
COPY config/ /etc/actormq/
ENV ACTORMQ_CONFIG_DIR=/etc/actormq \
    ACTORMQ__BROKER__DATA_DIR=/var/lib/actormq \
    ACTORMQ__BROKER__LISTEN=0.0.0.0:7670 \
    ACTORMQ__STOMP__LISTEN=0.0.0.0:61613
USER actormq
WORKDIR /var/lib/actormq
VOLUME ["/var/lib/actormq"]
EXPOSE 7670 61613
ENTRYPOINT ["/usr/local/bin/actormq"]
CMD ["broker"]

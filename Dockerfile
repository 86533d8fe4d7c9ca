# The palisade image: one binary for the operator, the agents, the webhook and the chart's hooks.
# `make images` builds the same image without Docker (tests/cluster/images.sh): the release binary
# on the runtime files of the Debian packages installed here.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p palisade-cli --bin palisade

FROM debian:bookworm-slim
# iptables (both the legacy and the nft backend, with the xtables modules) and ipset: what the agent runs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ipset \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/palisade /usr/local/bin/palisade
ENTRYPOINT ["/usr/local/bin/palisade"]

# syntax=docker/dockerfile:1
# The kubepbx image: one `kubepbx` binary (every role: up, registrar, media, operator, apply)
# and the built web phone and admin UI. Build from the repository root:
#   docker build -t kubepbx:dev .
# The runtime image runs as an unprivileged user (65532) and needs no writable root
# filesystem; `kubepbx up` writes only to --data-dir (mount a volume there).

# --- web phone and admin UI (JsSIP + esbuild) -------------------------------------------
FROM docker.io/library/node:20-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# --- the binary (release build) ---------------------------------------------------------
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p kubepbx \
 && install -D -m 0755 target/release/kubepbx /out/kubepbx

# --- runtime: glibc and CA certificates, no shell, non-root ----------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/kubepbx /usr/local/bin/kubepbx
COPY --from=web /src/web/dist /usr/share/kubepbx/web
ENV KUBEPBX_WEB_DIR=/usr/share/kubepbx/web \
    KUBEPBX_DATA_DIR=/var/lib/kubepbx
USER 65532:65532
# SIP (UDP and TCP), HTTP (API, web phone, /ws), HTTPS (WSS), internal forwarding between
# registrars, media control, WebRTC. RTP uses --rtp-ports (default 20000-20999/udp).
EXPOSE 5060/udp 5060/tcp 8080/tcp 8443/tcp 5070/udp 9090/tcp 21000/udp
ENTRYPOINT ["/usr/local/bin/kubepbx"]
CMD ["--help"]

# Sori in a container: the shipped build (profile `dist`) on Debian, as a non-root user.
#
#   docker build -t sori .
#   docker run -d --name sori --network host -v sori:/var/lib/sori \
#     -e SORI_LISTEN=0.0.0.0:443 -e SORI_DOMAIN=meet.example.org -e SORI_HTTP_LISTEN=0.0.0.0:80 \
#     -e SORI_ACME_EMAIL=you@example.org sori
#
# Host networking: media flows over one UDP port (40000), TURN over 3478, and the server must
# advertise the host's own address to browsers; behind Docker's NAT neither holds without
# extra port mappings and --advertise-ip. docs/deployment.md has the details; the tests do not
# build this image (no container runtime on the machines they run on), they run the same
# binary in a bare Debian root (scripts/test-deb).

FROM rust:1-bookworm AS build
# The git revision `sori --version` names (.git is not copied in): --build-arg
# SORI_GIT_REVISION=$(git rev-parse --short=12 HEAD).
ARG SORI_GIT_REVISION=unknown
WORKDIR /src
COPY . .
RUN SORI_GIT_REVISION=$SORI_GIT_REVISION cargo build --locked --profile dist -p sori \
 && install -m 0755 target/dist/sori /usr/local/bin/sori

FROM debian:bookworm-slim
RUN useradd --system --user-group --home-dir /var/lib/sori --create-home \
      --shell /usr/sbin/nologin sori \
 && install -d -o sori -g sori -m 0750 /var/lib/sori /etc/sori
COPY --from=build /usr/local/bin/sori /usr/bin/sori
COPY packaging/debian/sori.toml /etc/sori/sori.toml
USER sori
WORKDIR /var/lib/sori
VOLUME ["/var/lib/sori"]
EXPOSE 443/tcp 80/tcp 40000/udp 40000/tcp 3478/udp 3478/tcp
# Ports below 1024 for a non-root user: `--sysctl net.ipv4.ip_unprivileged_port_start=80`,
# or --network host with the host's setting; or listen on 8443/8080 behind a port mapping.
# The health check asks /healthz on the metrics address (plain HTTP on loopback, whatever the
# main listener speaks).
ENV SORI_METRICS_LISTEN=127.0.0.1:9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9100 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/bin/sori", "serve", "--config", "/etc/sori/sori.toml"]

# Redis and PostgreSQL from Debian 12's packages, for where the official
# images (redis:7-bookworm, postgres:15-bookworm) cannot be pulled:
#
#   podman build --target redis    -t ragnx-redis    -f docker/services.Dockerfile .
#   podman build --target postgres -t ragnx-postgres -f docker/services.Dockerfile .
#   RAGNX_REDIS_IMAGE=ragnx-redis RAGNX_POSTGRES_IMAGE=ragnx-postgres \
#       podman-compose up -d
#
# (scripts/image --services).  Each takes what docker-compose.yml uses of
# the official one and nothing else: Redis with redis-server, redis-cli,
# setpriv, a user redis and /data; PostgreSQL with POSTGRES_USER,
# POSTGRES_PASSWORD and POSTGRES_DB, PGDATA in /var/lib/postgresql/data,
# pg_isready, password (scram-sha-256) logins over the network.

FROM debian:bookworm AS redis

RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
           --no-install-recommends redis-server >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o redis -g redis -m 0750 /data
WORKDIR /data
VOLUME /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]

FROM debian:bookworm AS postgres

RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
           --no-install-recommends postgresql-15 >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
    && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
COPY docker/postgres-entrypoint /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
USER postgres
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
CMD ["postgres"]

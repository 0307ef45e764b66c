# syntax=docker/dockerfile:1
#
# ragnx images: nginx with the module, and the worker pool.
#
#   docker build --target nginx  -t ragnx-nginx  .
#   docker build --target worker -t ragnx-worker .
#
# or both through docker-compose.yml.  The build stage runs the same
# scripts and make targets as a developer's checkout (scripts/deps, make);
# t/shipping.t checks that what this file runs and copies still exists.

# ---- build: the module against the distro's nginx-dev, and the worker ----
FROM debian:bookworm AS build

WORKDIR /src
# the package list first, so source changes do not redo the apt layer
COPY scripts/deps scripts/deps
RUN ./scripts/deps --build && rm -rf /var/lib/apt/lists/*

COPY . .
RUN make module worker \
    && dpkg-query -W -f='${Version}' nginx > build/nginx.version

# ---- runtime: nginx, the module, ragnx-worker; run-time libraries only ----
FROM debian:bookworm AS runtime

COPY scripts/deps /usr/local/lib/ragnx/deps
COPY --from=build /src/build/nginx.version /usr/local/lib/ragnx/nginx.version
# The module only loads into the nginx it was built against: refuse to
# build an image where the two differ (an apt update between the stages).
RUN /usr/local/lib/ragnx/deps --runtime \
    && rm -rf /var/lib/apt/lists/* \
    && test "$(dpkg-query -W -f='${Version}' nginx)" \
            = "$(cat /usr/local/lib/ragnx/nginx.version)" \
    && groupadd --system --gid 10001 ragnx \
    && useradd --system --uid 10001 --gid ragnx --no-create-home \
               --home-dir /nonexistent --shell /usr/sbin/nologin ragnx \
    && install -d -m 0755 /etc/ragnx

COPY --from=build /src/build/nginx/objs/ngx_http_ragnx_module.so \
     /usr/lib/nginx/modules/ngx_http_ragnx_module.so
# the migrations (sql/) are compiled into the binary
COPY --from=build /src/build/workers/ragnx-worker /usr/bin/ragnx-worker
COPY schemas/ /usr/share/ragnx/schemas/
# a sample corpus: `ragnx-worker ingest /usr/share/ragnx/corpus`
COPY README.md /usr/share/ragnx/corpus/README.md
COPY docs/ /usr/share/ragnx/corpus/docs/

# nginx.conf is the shipped example, logging to the container's output and
# with Redis at the compose service "redis"; the JWT key is mounted at
# /etc/ragnx/jwt.key (see docker-compose.yml).
COPY nginx.conf.example docker/nginx.sed /usr/local/lib/ragnx/
RUN sed -f /usr/local/lib/ragnx/nginx.sed \
        /usr/local/lib/ragnx/nginx.conf.example > /etc/nginx/nginx.conf

# ---- the worker pool: no port, never root (uid 10001) ----------------------
FROM runtime AS worker

USER ragnx
# SIGTERM drains jobs in flight (up to drain_timeout), SIGHUP reloads
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/ragnx-worker"]
CMD []

# ---- nginx with the module ---------------------------------------------------
FROM runtime AS nginx

EXPOSE 80
# graceful: finish the requests in flight, including pending pool calls
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]

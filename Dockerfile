# ragnx images: nginx with the module, and the worker pool.
#
#   docker build --target nginx  -t ragnx-nginx  .
#   docker build --target worker -t ragnx-worker .
#
# or both through docker-compose.yml; `make image` builds them with podman
# from a local debian:bookworm (scripts/image).  The build stage runs the
# same scripts and make targets as a developer's checkout (scripts/deps,
# make); t/shipping.t checks that what this file runs and copies still
# exists, `make test-image` builds and runs them.  Plain Dockerfile syntax:
# no BuildKit frontend to fetch, so it builds offline too.

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
    && install -d -m 0755 /etc/ragnx \
    && install -d -o ragnx -g ragnx /var/lib/nginx /var/lib/nginx/body \
               /var/lib/nginx/proxy /var/lib/nginx/fastcgi \
               /var/lib/nginx/uwsgi /var/lib/nginx/scgi

COPY --from=build /src/build/nginx/objs/ngx_http_ragnx_module.so \
     /usr/lib/nginx/modules/ngx_http_ragnx_module.so
# the migrations (sql/) are compiled into the binary
COPY --from=build /src/build/workers/ragnx-worker /usr/bin/ragnx-worker
COPY schemas/ /usr/share/ragnx/schemas/
# the chat page, served by nginx (nginx.conf.example, docs/web.md)
COPY web/ /usr/share/ragnx/web/
COPY docs/openapi.json /usr/share/ragnx/openapi.json
# a sample corpus: `ragnx-worker ingest /usr/share/ragnx/corpus`
COPY README.md /usr/share/ragnx/corpus/README.md
COPY docs/ /usr/share/ragnx/corpus/docs/

# nginx.conf is the shipped example, logging to the container's output and
# with Redis at the compose service "redis"; the JWT key is mounted at
# /etc/ragnx/jwt.key (see docker-compose.yml).
COPY nginx.conf.example docker/nginx.sed /usr/local/lib/ragnx/
RUN sed -f /usr/local/lib/ragnx/nginx.sed \
        /usr/local/lib/ragnx/nginx.conf.example > /etc/nginx/nginx.conf
# waits for the services named in RAGNX_WAIT_FOR, then runs the command;
# nginx's health check
COPY docker/entrypoint /usr/local/bin/ragnx-entrypoint
COPY docker/healthcheck /usr/local/bin/ragnx-healthcheck

# Both images run as ragnx (uid 10001), never root, and write nothing to
# their root filesystem: docker-compose.yml runs them read-only.
USER ragnx

# ---- the worker pool: no port ---------------------------------------------
FROM runtime AS worker

# SIGTERM drains jobs in flight (up to drain_timeout), SIGHUP reloads
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ragnx-entrypoint", "/usr/bin/ragnx-worker"]
CMD []

# ---- nginx with the module ---------------------------------------------------
FROM runtime AS nginx

# port 8080: an unprivileged master cannot bind 80 (docker/nginx.sed).
# -e stderr: nginx opens its error log before it reads its configuration,
# and /var/log/nginx is root's (and read-only).
EXPOSE 8080
# graceful: finish the requests in flight, including pending pool calls
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/usr/local/bin/ragnx-entrypoint"]
CMD ["nginx", "-e", "stderr", "-g", "daemon off;"]

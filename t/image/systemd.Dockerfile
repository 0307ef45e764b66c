# make test-image (scripts/test-image): the worker image with systemd as
# its init, to run scripts/ragnx-worker.service as it is shipped.  A test
# image only: it is built FROM the local ragnx-worker image.
FROM ragnx-worker
USER root
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
           --no-install-recommends systemd >/dev/null \
    && rm -rf /var/lib/apt/lists/*
COPY scripts/ragnx-worker.service /etc/systemd/system/ragnx-worker.service
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT []
CMD ["/lib/systemd/systemd"]

# sed script: nginx.conf.example -> the image's /etc/nginx/nginx.conf
# (Dockerfile).  nginx runs as the unprivileged user ragnx on port 8080
# with a read-only root: no user switch, the pid file in /tmp (a tmpfs),
# the open-file limit is the container's (ulimits); logs go to the
# container's output, Redis is the compose service "redis"; everything
# else is the example as it is.
# t/shipping.t checks that every line here still changes the example.
s|^user www-data;$|# user: none, the master runs as ragnx (Dockerfile)|
s|^worker_rlimit_nofile 65536;$|# worker_rlimit_nofile: the container's limit|
s|^pid /run/nginx\.pid;$|pid /tmp/nginx.pid;|
s|^error_log /var/log/nginx/error\.log warn;$|error_log stderr warn;|
s|^\( *access_log\) /var/log/nginx/ragnx-access\.log ragnx;$|\1 /dev/stdout ragnx;|
s|^\( *ragnx_redis\) 127\.0\.0\.1:6379 |\1 redis:6379 |
s|^\( *listen  *\)80;$|\18080;|

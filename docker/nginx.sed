# sed script: nginx.conf.example -> the image's /etc/nginx/nginx.conf
# (Dockerfile).  Logs go to the container's output, Redis is the compose
# service "redis"; everything else is the example as it is.
# t/shipping.t checks that every line here still changes the example.
s|^error_log /var/log/nginx/error\.log warn;$|error_log stderr warn;|
s|^\( *access_log\) /var/log/nginx/ragnx-access\.log ragnx;$|\1 /dev/stdout ragnx;|
s|^\( *ragnx_redis\) 127\.0\.0\.1:6379 |\1 redis:6379 |

#!/bin/sh
# The Kong container's entry point: listen on Railway's PORT over IPv4 and IPv6, render the
# declarative config from the environment (render-config.sh), then run Kong's own entry
# point. SIGTERM (what Railway sends at the end of a deploy's overlap) becomes SIGQUIT,
# nginx's graceful stop: in-flight requests finish within worker_shutdown_timeout.
set -eu

here=${KONG_FILES:-/kong}
port=${PORT:-8000}
case $port in
  '' | *[!0-9]*) echo "kong: PORT must be a number, got '$port'" >&2; exit 64 ;;
esac
export KONG_PROXY_LISTEN="0.0.0.0:$port reuseport backlog=16384, [::]:$port reuseport backlog=16384"
export KONG_DECLARATIVE_CONFIG="$here/kong.yml"
"$here/render-config.sh" "$here/kong.yml.tmpl" "$KONG_DECLARATIVE_CONFIG"

# The trap is in place before Kong starts, so a stop that comes early is never lost.
pid=
stopping=
trap 'stopping=1; [ -z "$pid" ] || kill -QUIT "$pid" 2>/dev/null || true' TERM INT QUIT
"${KONG_ENTRYPOINT:-/docker-entrypoint.sh}" "$@" &
pid=$!
[ -z "$stopping" ] || kill -QUIT "$pid" 2>/dev/null || true
status=0
wait "$pid" || status=$?
# A trapped signal ends the first wait early; the second waits for Kong itself.
if kill -0 "$pid" 2>/dev/null; then
  status=0
  wait "$pid" || status=$?
fi
exit "$status"

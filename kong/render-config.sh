#!/bin/sh
# Render the declarative config Kong loads from kong.yml.tmpl and the environment, and check
# the node settings that come from the environment. Refuses (exit 64, naming the variable)
# a missing or unsafe value instead of starting a gateway that is open or unreachable.
#
#   render-config.sh TEMPLATE OUTPUT
#
#   UPSTREAM_TARGET   the app's private host:port, e.g. supaguard.railway.internal:8080
#   CORS_ORIGINS      exact https origins, comma-separated (the app's CORS_ORIGINS)
#   KONG_TRUSTED_IPS  the ranges of the proxy in front of Kong (the platform edge): CIDRs,
#                     comma-separated; never 0.0.0.0/0 or ::/0 (any client could then
#                     choose its own address and scheme)
set -eu

fail() {
  echo "kong config: $*" >&2
  exit 64
}

[ $# -eq 2 ] || fail "usage: render-config.sh TEMPLATE OUTPUT"
template=$1
output=$2

host='[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?'
port='[0-9]{1,5}'

target=${UPSTREAM_TARGET:-}
[ -n "$target" ] || fail "UPSTREAM_TARGET is not set (the app's private host:port)"
printf '%s\n' "$target" | grep -Eqx "($host|\[[0-9A-Fa-f:]+\]):$port" \
  || fail "UPSTREAM_TARGET must be host:port, got '$target'"

origins=""
old_ifs=$IFS
IFS=,
for origin in ${CORS_ORIGINS:-}; do
  origin=$(printf '%s' "$origin" | tr -d ' \t')
  [ -n "$origin" ] || continue
  printf '%s\n' "$origin" | grep -Eqx "https://$host(:$port)?" \
    || fail "CORS_ORIGINS: '$origin' is not an exact https origin (scheme://host[:port], no '*', no path)"
  origins="$origins${origins:+, }\"$origin\""
done
IFS=$old_ifs
[ -n "$origins" ] || fail "CORS_ORIGINS is not set (the browser origins allowed to call the API)"

trusted=${KONG_TRUSTED_IPS:-}
[ -n "$trusted" ] || fail "KONG_TRUSTED_IPS is not set (the edge's ranges)"
IFS=,
for range in $trusted; do
  range=$(printf '%s' "$range" | tr -d ' \t')
  case $range in
    */0 | 0.0.0.0 | ::) fail "KONG_TRUSTED_IPS: '$range' trusts every client" ;;
  esac
  printf '%s\n' "$range" | grep -Eqx '([0-9]{1,3}\.){3}[0-9]{1,3}(/[0-9]{1,2})?|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(/[0-9]{1,3})?' \
    || fail "KONG_TRUSTED_IPS: '$range' is not an address or CIDR"
done
IFS=$old_ifs

sed -e "s|\${UPSTREAM_TARGET}|$target|g" -e "s|\${CORS_ORIGINS}|[$origins]|g" "$template" >"$output.tmp"
if grep -v '^[[:space:]]*#' "$output.tmp" | grep -q '\${'; then
  rm -f "$output.tmp"
  fail "$template has a marker no variable fills"
fi
mv "$output.tmp" "$output"

#!/bin/sh
# Writes the RabbitMQ users of a warren deployment from the environment, then runs the given
# command (the image's entrypoint). RabbitMQ creates no user at all (not even guest) when it
# loads definitions at boot, and credentials must not be committed: so the users are rendered
# into $DEFINITIONS_DIR/users.json at container start, beside topology.json (definitions.json).
#   WARREN_RABBITMQ_PASSWORD  the `warren` user: workers and gateways (configure, write, read on /)
#   OPS_RABBITMQ_PASSWORD     the `ops` user: administrator, logs into the management UI
#   WARREN_RABBITMQ_USER, OPS_RABBITMQ_USER   other names (default warren, ops)
#   DEV_GUEST=true            also guest/guest, administrator: local development only
set -eu
dir="${DEFINITIONS_DIR:-/etc/rabbitmq/definitions.d}"
app_user="${WARREN_RABBITMQ_USER:-warren}"
ops_user="${OPS_RABBITMQ_USER:-ops}"

check() { # name value: non-empty, and nothing that would need escaping in JSON
  case "$2" in
    "") echo "render-users: $1 is not set" >&2; exit 64 ;;
    *[\"\\]*) echo "render-users: $1 must not contain \" or \\" >&2; exit 64 ;;
  esac
  if printf '%s' "$2" | LC_ALL=C grep -q '[[:cntrl:]]'; then
    echo "render-users: $1 must not contain control characters" >&2; exit 64
  fi
}
check WARREN_RABBITMQ_PASSWORD "${WARREN_RABBITMQ_PASSWORD:-}"
check OPS_RABBITMQ_PASSWORD "${OPS_RABBITMQ_PASSWORD:-}"
check WARREN_RABBITMQ_USER "$app_user"
check OPS_RABBITMQ_USER "$ops_user"

guest_user="" guest_permission=""
if [ "${DEV_GUEST:-false}" = "true" ]; then
  guest_user=',{"name":"guest","password":"guest","tags":"administrator"}'
  guest_permission=',{"user":"guest","vhost":"/","configure":".*","write":".*","read":".*"}'
fi
mkdir -p "$dir"
umask 077
cat > "$dir/users.json" <<JSON
{"users":[{"name":"$app_user","password":"$WARREN_RABBITMQ_PASSWORD","tags":"policymaker"},{"name":"$ops_user","password":"$OPS_RABBITMQ_PASSWORD","tags":"administrator"}$guest_user],
 "permissions":[{"user":"$app_user","vhost":"/","configure":".*","write":".*","read":".*"},{"user":"$ops_user","vhost":"/","configure":".*","write":".*","read":".*"}$guest_permission]}
JSON
# The broker runs as the rabbitmq user in the official image.
if id rabbitmq >/dev/null 2>&1; then chown rabbitmq "$dir/users.json"; fi
exec "$@"

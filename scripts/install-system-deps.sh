#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, only when they are missing: Redis and
# memcached (store tests; Debian's redis-server has TLS and Sentinel built in), openssl (the
# certificates of tests/test_redis_tls_sentinel.py), Chromium and its chromedriver
# (tests/test_browser.py).
# Under CI=true a failure here fails the run: server and browser tests are never skipped there.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v memcached >/dev/null || missing+=(memcached)
command -v openssl >/dev/null || missing+=(openssl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing ${missing[*]} from Debian's packages"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The packages start system-wide daemons on the default ports; the tests start their own.
for service in redis-server memcached; do
  "${sudo_cmd[@]}" service "$service" stop >/dev/null 2>&1 || true
done

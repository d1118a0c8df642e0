#!/bin/sh
# What `make test` needs beyond Python: Debian's Chromium (the page tests drive it
# through Playwright's Python wheel; never `playwright install`, which downloads),
# Debian's nginx (the README's nginx examples run behind it), and curl and jq (the
# README's walkthrough runs as written). Installed when missing
# and this is root on a Debian-like system; otherwise one line says what to run.
need=""
command -v jq >/dev/null 2>&1 || need="$need jq"
command -v curl >/dev/null 2>&1 || need="$need curl"
command -v chromium >/dev/null 2>&1 || need="$need chromium"
{ command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx; } || need="$need nginx"
[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "make test: installing Debian's$need"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
  exit $?
fi
echo "make test needs$need: run  sudo apt-get install -y$need  and then make test again" >&2
exit 2

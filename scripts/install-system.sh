#!/usr/bin/env bash
# Install the Debian packages the project needs (the lab's servers and network tools).
# Idempotent and quiet when everything is there. Package installs must not start system-wide
# instances of nginx, coturn or dnsmasq: the project starts its own, inside its own configs, so a
# policy-rc.d that forbids service starts is in place for the duration of the install.
set -euo pipefail
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "msgwatch: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
fi
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    created_policy=1
fi
trap '[ $created_policy -eq 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Where no init system honours policy-rc.d a freshly installed package may still have started its
# daemon; stop only the daemons of the packages installed just now.
for pkg in "${missing[@]}"; do
    case "$pkg" in
        nginx-light) pkill -x nginx 2>/dev/null || true ;;
        coturn) pkill -x turnserver 2>/dev/null || true ;;
        tor) pkill -x tor 2>/dev/null || true ;;
        openvpn) pkill -x openvpn 2>/dev/null || true ;;
        dante-server) pkill -x danted 2>/dev/null || true ;;
        tinyproxy) pkill -x tinyproxy 2>/dev/null || true ;;
        shadowsocks-libev) pkill -x ss-server 2>/dev/null || true ;;
    esac
done

#!/usr/bin/env bash
# Measures the same AWS-KMS-like load against the Cosmian emulator directly, through nginx and
# through xksproxy, in one run on this machine; then runs the cutover-under-load demo.
#   bench/compare.sh [--duration 10s] [--json] [--rate 1800] [--keys 100] [--out DIR] [--skip-demo]
# See bench/README.md. stdout carries only the result (the JSON array with --json); progress,
# installation output and the human-readable table go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nginx >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "compare.sh: installing nginx (Debian package)" >&2
		# Keep the package's service from starting: it would listen on :80 and outlive the run.
		made_policy=""
		if [ ! -e /usr/sbin/policy-rc.d ]; then
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
			chmod 755 /usr/sbin/policy-rc.d
			made_policy=1
		fi
		rc=0
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx ||
			{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx; }; } >&2 || rc=$?
		if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
		if [ "$rc" != 0 ]; then
			echo "compare.sh: nginx installation failed (exit $rc)" >&2
			exit "$rc"
		fi
	else
		echo "compare.sh: nginx is not installed; run as root (apt-get install -y nginx) or pass --skip-nginx" >&2
	fi
fi

exec go run ./bench/cmd/compare "$@"

#!/usr/bin/env bash
# Runs a command with systemd-udevd running (a real host's set-up), so that
# libdevmapper synchronises with udev through cookies and udev's rules make
# the /dev/mapper nodes. Used to run the devmapper kernel tests a second
# time, the first time being without udev (the bare guest).
set -u
[ $# -ge 1 ] || { echo "usage: with-udev.sh CMD..." >&2; exit 2; }
unset DM_DISABLE_UDEV
mkdir -p /run/udev
/lib/systemd/systemd-udevd --daemon --resolve-names=never || { echo "with-udev: systemd-udevd did not start"; exit 1; }
for i in $(seq 1 100); do [ -S /run/udev/control ] && break; sleep 0.1; done
[ -S /run/udev/control ] || { echo "with-udev: /run/udev/control did not appear"; exit 1; }
TS_EXPECT_UDEV=1 "$@"
rc=$?
udevadm control --exit 2>/dev/null || pkill systemd-udevd
exit $rc

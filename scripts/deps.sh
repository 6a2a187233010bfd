#!/usr/bin/env bash
# Installs every Debian package thinsnap needs to build, test and benchmark.
# Idempotent: does nothing (and needs no network) when all are present.
set -euo pipefail

PKGS=(
  # build
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libdevmapper-dev libext2fs-dev e2fsprogs libblkid-dev libjson-c-dev
  libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler libuv1-dev liblmdb-dev
  libcurl4-openssl-dev libssl-dev check
  # thinsnap image import: OCI layout and docker save tarballs
  libarchive-dev
  # containerd matches "~=" filters with Go's regexp: libre2 has its syntax and linear time
  libre2-dev
  # thinsnapd's metrics endpoint (HTTP)
  libmicrohttpd-dev
  # real-kernel lane (QEMU guest booting Debian's kernel)
  qemu-system-x86 busybox-static cpio kmod dmsetup udev thin-provisioning-tools
  # peers and independent clients used by tests and benchmarks
  containerd golang-go golang-github-containerd-containerd-dev
  python3-grpcio python3-protobuf python3-grpc-tools
  # a real OCI registry on 127.0.0.1 (plain, TLS + htpasswd, token auth) and its pusher
  docker-registry skopeo apache2-utils python3-jwt python3-cryptography
  # tests of ctrd/: gzip layers built by the test; debian-archive-keyring checks
  # the suites tests/lib/fetch-containerd downloads containerd from
  zlib1g-dev debian-archive-keyring
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
echo "deps: installing ${missing[*]}" >&2
SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
$SUDO apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null

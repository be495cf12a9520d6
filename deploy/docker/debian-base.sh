#!/usr/bin/env bash
# Builds a base image for Parley's Dockerfile from Debian's packages alone
# (debootstrap + docker import), for machines that reach no image registry:
#   deploy/docker/debian-base.sh [TAG]        # prints the tag it built or found
#   docker build --build-arg BASE_IMAGE="$(deploy/docker/debian-base.sh)" .
# It uses this machine's Debian release and apt mirror, and reuses an existing
# image with the same tag (delete it with `docker rmi` to rebuild).
set -euo pipefail
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:?not a Debian release}")"
tag="${1:-parley-base:$codename}"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debian-base: apt-get install debootstrap" >&2; exit 1; }
# The mirror apt already uses here (deb822 "URIs:" or one-line "deb URI ...").
mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
  | awk '($1 == "URIs:" || $1 == "deb") && $2 ~ /\/debian\/?$/ && !m {m = $2} END {print m}' || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
echo "debian-base: debootstrap $codename from $mirror" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$codename" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
# What an image never needs: downloaded packages, package lists, manuals, translations.
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
  "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
tar --numeric-owner -C "$rootfs" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$tag" >/dev/null
echo "$tag"

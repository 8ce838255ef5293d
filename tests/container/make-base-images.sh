#!/bin/bash
# make-base-images.sh - make the base images deploy/Dockerfile starts FROM,
# localhost/debian:12-slim and localhost/debian:12, with debootstrap from
# Debian's own archive: for machines that reach deb.debian.org but no
# container registry. Podman resolves the Dockerfile's `FROM debian:12-slim`
# and `FROM debian:12` to them (a local image wins over a registry lookup).
#
#   bash tests/container/make-base-images.sh          # as root; ~30-60 s
#   DEBIAN_MIRROR=http://mirror.example/debian bash tests/container/make-base-images.sh
#
# One minbase bookworm tree, imported once and tagged twice (the official
# debian:12-slim differs from debian:12 by dropping documentation and apt's
# downloaded archives; this one keeps whatever the Dockerfile does not clean,
# which is what tests/container/test_container.py measures against). Its apt
# sources are the official images' (bookworm, bookworm-updates,
# bookworm-security in /etc/apt/sources.list.d/debian.sources).
#
# The container test (tests/container/test_container.py) runs this when
# either image is missing; nothing here changes podman's configuration.
set -euo pipefail

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SLIM=${PICKET_BASE_SLIM:-localhost/debian:12-slim}
FULL=${PICKET_BASE_FULL:-localhost/debian:12}

die() { echo "make-base-images: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and podman's root storage)"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed: apt-get install debootstrap (or bash deploy/install-deps.sh --test)"
command -v podman >/dev/null 2>&1 || die "podman is not installed: apt-get install podman (or bash deploy/install-deps.sh --test)"

work=$(mktemp -d /var/tmp/picket-debootstrap.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root

echo "make-base-images: debootstrap --variant=minbase bookworm from $MIRROR" >&2
if ! debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
  tail -n 20 "$work/debootstrap.log" >&2
  die "debootstrap failed (is $MIRROR reachable? log above)"
fi

rm -f "$root/etc/apt/sources.list"
mkdir -p "$root/etc/apt/sources.list.d"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# what debootstrap leaves behind that no image needs
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
       "$root"/var/lib/apt/lists/*_* "$root"/var/log/bootstrap.log "$root"/debootstrap

tar --numeric-owner -C "$root" -c . |
  podman import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase bookworm $MIRROR (tests/container/make-base-images.sh)" \
    - "$SLIM" >/dev/null
podman tag "$SLIM" "$FULL"
echo "make-base-images: made $SLIM and $FULL ($(podman image inspect --format '{{.Id}}' "$SLIM" | cut -c1-12))" >&2

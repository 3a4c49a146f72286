#!/bin/sh
# Builds a small container image for tests without reaching any registry:
# a root file system holding a static busybox and a link for each of its
# commands, packed with tar and loaded with `<runtime> import`.
#
# Usage: build-test-image.sh IMAGE_NAME
#
# The runtime is $DANUBE_CONTAINER_RUNTIME when set, otherwise podman. Running
# the script again when the image exists does nothing. Needs a static busybox
# (Debian's busybox-static) at $BUSYBOX or /bin/busybox.
set -eu

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 IMAGE_NAME" >&2
    exit 2
fi
image=$1
runtime=${DANUBE_CONTAINER_RUNTIME:-podman}
busybox=${BUSYBOX:-/bin/busybox}

if "$runtime" image inspect "$image" >/dev/null 2>&1; then
    exit 0
fi

if ! "$busybox" --list >/dev/null 2>&1; then
    echo "$0: no usable busybox at $busybox (install busybox-static or set BUSYBOX)" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/workspace" "$rootfs/etc"
chmod 1777 "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    if [ "$applet" != busybox ]; then
        ln -s busybox "$rootfs/bin/$applet"
    fi
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"

tar -C "$rootfs" -cf "$work/rootfs.tar" .
# The runtime's progress lines are noise in test output; show them only
# when the import fails.
if ! "$runtime" import --change 'ENV PATH=/bin' "$work/rootfs.tar" "$image" >"$work/import.log" 2>&1; then
    cat "$work/import.log" >&2
    exit 1
fi

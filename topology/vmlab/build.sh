#!/usr/bin/env bash
# Builds what the kernel-datapath VM lab boots, from Debian's packages only, into a
# cache (default /var/cache/socketnet/vmlab, or $SOCKETNET_VM_CACHE):
#
#   kernel-<version>/    Debian's kernel (`linux-image-amd64`'s dependency, unpacked)
#   root-<key>/          a debootstrapped Debian 12 root: Open vSwitch, kernel WireGuard
#                        tools, iproute2, nftables, socat, Python 3 with socketnet's
#                        dependencies in /opt/socketnet/site, the kernel's modules
#   initrd-<key>.cpio.gz busybox and the virtio, 9p and overlay modules: it mounts the
#                        root read-only over virtio-9p under a tmpfs overlay, so a run
#                        never writes to the cache
#
# <key> is a hash of this script, the guest's init, the package list, the kernel's
# version and socketnet's dependencies: a change to any of them builds anew, anything
# else reuses the cache. Builders take a lock, so two runs cannot collide.
#
# Usage: build.sh PYTHON   (PYTHON: a Python with pip, used to install socketnet's
# dependencies into the guest's root). Prints, as its last lines, KEY=VALUE pairs:
# kernel_version, kernel, initrd, root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/../.." && pwd)"
python="${1:?usage: build.sh PYTHON}"
cache="${SOCKETNET_VM_CACHE:-/var/cache/socketnet/vmlab}"
suite=bookworm

GUEST_PACKAGES=(
  openvswitch-switch wireguard-tools iproute2 nftables kmod procps
  iputils-ping socat ethtool python3 ca-certificates tini
  systemd  # a guest booted with vmlab.init=systemd runs it as PID 1 (the units' tests)
)
INITRD_MODULES=(virtio_pci virtio_net 9pnet_virtio 9p overlay)

say() { printf 'vmlab: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

for tool in debootstrap dpkg-deb apt-get depmod cpio busybox gzip; do
  command -v "$tool" >/dev/null || die "$tool is missing (./dev installs it)"
done
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# Debian's mirror as this machine's apt knows it (its first deb URI for the suite);
# a machine whose package lists were never fetched fetches them first.
find_mirror() {
  apt-get indextargets --format '$(REPO_URI)' "Codename: $suite" 2>/dev/null \
    | grep -v security | head -n1 || true
}
mirror="$(find_mirror)"
if [ -z "$mirror" ] || ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  apt-get -o Acquire::Retries=3 update -qq || die "apt-get update failed"
  mirror="$(find_mirror)"
fi
[ -n "$mirror" ] || die "no apt source for Debian $suite"

kernel_pkg="$(apt-cache depends linux-image-amd64 2>/dev/null \
               | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
[ -n "$kernel_pkg" ] || die "Debian's linux-image-amd64 cannot be had"
kernel_version="$(apt-cache policy "$kernel_pkg" | awk '/Candidate:/ {print $2}')"
[ -n "$kernel_version" ] && [ "$kernel_version" != "(none)" ] \
  || die "$kernel_pkg has no installable version"
kernel_release="${kernel_pkg#linux-image-}"

deps="$("$python" - "$src/setup.cfg" <<'PY'
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
lines = cfg["options"]["install_requires"].splitlines()
lines += [r for r in cfg["options.extras_require"]["test"].splitlines()
          if r.strip().startswith("pytest")]  # the suite runs in the guest
print(" ".join(line.strip() for line in lines if line.strip()))
PY
)"
key="$(cat "$0" "$here/guest-init" <(printf '%s\n' "${GUEST_PACKAGES[@]}" "$kernel_pkg" \
        "$kernel_version" "$deps") | sha256sum | cut -c1-16)"

kdir="$cache/kernel-$kernel_version"
if [ ! -f "$kdir/vmlinuz" ]; then
  say "fetching $kernel_pkg $kernel_version"
  tmp="$(mktemp -d "$cache/kernel.XXXXXX")"
  (cd "$tmp" && apt-get download -q "$kernel_pkg=$kernel_version" >/dev/null 2>&1) \
    || { rm -rf "$tmp"; die "apt-get download $kernel_pkg=$kernel_version failed"; }
  dpkg-deb -x "$tmp"/*.deb "$tmp/x"
  cp "$tmp/x/boot/vmlinuz-$kernel_release" "$tmp/vmlinuz"
  mkdir -p "$tmp/lib/modules"
  mv "$tmp/x/lib/modules/$kernel_release" "$tmp/lib/modules/"
  depmod -b "$tmp" "$kernel_release"
  rm -rf "$tmp/x" "$tmp"/*.deb
  rm -rf "$kdir"; mv "$tmp" "$kdir"
fi

root="$cache/root-$key"
if [ ! -f "$root/.complete" ]; then
  say "debootstrap $suite with ${GUEST_PACKAGES[*]} (about a minute)"
  rm -rf "$root" "$root.tmp"
  include="$(IFS=,; echo "${GUEST_PACKAGES[*]}")"
  debootstrap --variant=minbase --include="$include" "$suite" "$root.tmp" "$mirror" \
    > "$cache/debootstrap.log" 2>&1 \
    || die "debootstrap failed (a package cannot be had?); see $cache/debootstrap.log: $(tail -n 3 "$cache/debootstrap.log")"
  mkdir -p "$root.tmp/lib/modules"
  cp -a "$kdir/lib/modules/$kernel_release" "$root.tmp/lib/modules/"
  say "socketnet's dependencies into the guest: $deps"
  # shellcheck disable=SC2086
  "$python" -m pip install -q --disable-pip-version-check --no-warn-script-location \
    --target "$root.tmp/opt/socketnet/site" $deps 2> >(grep -v "^WARNING: Location" >&2) \
    || die "pip could not install socketnet's dependencies for the guest"
  chroot "$root.tmp" python3 -m compileall -q /opt/socketnet/site /usr/lib/python3 >/dev/null || true
  install -m 755 "$here/guest-init" "$root.tmp/sbin/socketnet-guest-init"
  mkdir -p "$root.tmp/src"
  printf '%s\n' "$kernel_pkg $kernel_version" > "$root.tmp/etc/socketnet-kernel"
  chroot "$root.tmp" dpkg-query -W -f '${Package}=${Version} ' openvswitch-switch \
    wireguard-tools iproute2 nftables python3 > "$root.tmp/etc/socketnet-packages"
  rm -rf "$root.tmp/var/cache/apt/archives"/*.deb
  touch "$root.tmp/.complete"
  mv "$root.tmp" "$root"
fi

initrd="$cache/initrd-$key.cpio.gz"
if [ ! -f "$initrd" ]; then
  tmp="$(mktemp -d "$cache/initrd.XXXXXX")"
  mkdir -p "$tmp"/{bin,dev,proc,sys,lower,upper,newroot,lib/modules}
  cp /bin/busybox "$tmp/bin/busybox"
  for m in "${INITRD_MODULES[@]}"; do
    for f in $(modprobe -d "$kdir" -S "$kernel_release" --show-depends "$m" 2>/dev/null \
               | awk '/^insmod/ {print $2}'); do
      rel="${f#"$kdir/lib/modules/$kernel_release/"}"
      mkdir -p "$tmp/lib/modules/$kernel_release/$(dirname "$rel")"
      cp "$f" "$tmp/lib/modules/$kernel_release/$rel"
    done
  done
  cp "$kdir/lib/modules/$kernel_release"/modules.{order,builtin,builtin.modinfo} \
    "$tmp/lib/modules/$kernel_release/"
  depmod -b "$tmp" "$kernel_release"
  cat > "$tmp/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_pci 9pnet_virtio 9p overlay; do modprobe "$m"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 root /lower \
  || { echo "vmlab: cannot mount the root"; sleep 2; echo o > /proc/sysrq-trigger; }
mount -t tmpfs -o size=1g upper /upper; mkdir -p /upper/u /upper/w
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w root /newroot
umount /proc /sys; umount /dev
exec switch_root /newroot /sbin/socketnet-guest-init
INIT
  chmod 755 "$tmp/init"
  (cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) > "$initrd.tmp"
  rm -rf "$tmp"; mv "$initrd.tmp" "$initrd"
fi

# Only the current build stays in the cache.
for old in "$cache"/root-* "$cache"/initrd-* "$cache"/kernel-*; do
  case "$old" in "$root"|"$initrd"|"$kdir") ;; *) rm -rf "$old" ;; esac
done

echo "kernel_version=$kernel_pkg $kernel_version"
echo "kernel=$kdir/vmlinuz"
echo "initrd=$initrd"
echo "root=$root"
echo "packages=$(cat "$root/etc/socketnet-packages")"

#!/usr/bin/env bash
# Real-kernel lab: boots a Debian kernel in QEMU with an emulated Intel 82576 (igb, SR-IOV)
# and runs tests/vmlab/guest/*.sh against the project's binaries on real VFs and a real
# soft-RoCE (rdma_rxe) device. Facts behind every flag: shared/vmlab/NOTES.md.
#
# Usage: ./scripts/vmlab.sh            (from any cwd; as root on Debian bookworm)
# Env:   VMLAB_CACHE   downloads + kernel extract (default /var/cache/rdma-hca-vmlab)
#        VMLAB_WORK    initramfs, 9p share, results (default <target>/vmlab)
#        VMLAB_TIMEOUT outer timeout for QEMU in seconds (default 240; an unloaded run takes < 3 min)
#        VMLAB_ACCEL   kvm|tcg (default: kvm when /dev/kvm is usable)
#        VMLAB_PROFILE cargo profile of the binaries (default dev: what ./scripts/test.sh has
#                      built already, stripped into the initramfs; ./scripts/bench.sh uses release)
#        VMLAB_NO_BUILD=1  use the binaries of that profile already built
#        VMLAB_ONLY    space-separated guest scenario names to run (default: all)
# Last line: "N passed, N failed"; exit status non-zero when anything failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
CACHE="${VMLAB_CACHE:-/var/cache/rdma-hca-vmlab}"
WORK="${VMLAB_WORK:-$TARGET/vmlab}"
TIMEOUT="${VMLAB_TIMEOUT:-240}"
PROFILE="${VMLAB_PROFILE:-dev}"
PROFILE_DIR=$PROFILE
[ "$PROFILE" = dev ] && PROFILE_DIR=debug
T0=$(date +%s.%N)

say() { echo "vmlab: [$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%5.1f", b - a}')s] $*" >&2; }
skip() {
    echo "skipped: $*"
    echo "0 passed, 0 failed"
    exit 0
}
die() {
    echo "vmlab: error: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

[ "$(uname -m)" = x86_64 ] || skip "the lab needs an x86_64 host (this is $(uname -m))"
command -v apt-get >/dev/null || skip "no apt-get: the lab installs QEMU and a kernel from Debian packages"
[ "$(id -u)" = 0 ] || skip "the lab must run as root (apt-get, sriov_numvfs)"
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || say "warning: written for Debian bookworm, this is ${VERSION_CODENAME:-unknown}"

mkdir -p "$CACHE" "$WORK"
# One lab run at a time per work dir; the cache has its own lock for concurrent clones.
exec 9>"$WORK/.lock"
flock 9

# ---------------------------------------------------------------- host packages
APT_UPDATED=0
apt_update() {
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        apt-get update -qq >>"$CACHE/apt.log" 2>&1 || { tail -n 20 "$CACHE/apt.log" >&2; die "apt-get update failed"; }
        APT_UPDATED=1
    fi
}
apt_install() { # packages...
    say "installing Debian packages: $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$CACHE/apt.log" 2>&1 \
        || { tail -n 20 "$CACHE/apt.log" >&2; die "apt-get install $* failed (log: $CACHE/apt.log)"; }
}
qemu_has_igb() {
    command -v qemu-system-x86_64 >/dev/null \
        && qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'
}

need=()
command -v depmod >/dev/null || need+=(kmod)
command -v cpio >/dev/null || need+=(cpio)
command -v ip >/dev/null || need+=(iproute2)
command -v xz >/dev/null || need+=(xz-utils)
command -v jq >/dev/null || need+=(jq) # copied into the guest to read discover --json
if [ ${#need[@]} -gt 0 ]; then
    apt_update
    apt_install "${need[@]}"
fi

if ! qemu_has_igb; then
    # -device igb exists only in QEMU >= 8: bookworm has 7.2, bookworm-backports has 10.x.
    src=/etc/apt/sources.list.d/rdma-hca-vmlab-backports.sources
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list.d/ /etc/apt/sources.list; then
        say "adding apt source bookworm-backports ($src) for qemu-system-x86 >= 8 (igb)"
        cat >"$src" <<'EOF'
# Added by scripts/vmlab.sh (rdma-hca): qemu-system-x86 with -device igb.
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        APT_UPDATED=0
    fi
    apt_update
    say "installing qemu-system-x86 from bookworm-backports (log: $CACHE/apt.log)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -t bookworm-backports qemu-system-x86 >>"$CACHE/apt.log" 2>&1 \
        || { tail -n 20 "$CACHE/apt.log" >&2; die "installing qemu-system-x86 from bookworm-backports failed"; }
    qemu_has_igb || die "qemu-system-x86_64 $(qemu-system-x86_64 --version | head -1) has no -device igb"
fi

# ---------------------------------------------------------------- guest packages (never installed on the host)
exec 8>"$CACHE/.lock"
flock 8
DEBS="$CACHE/debs"
mkdir -p "$DEBS"
fetch_deb() { # package -> prints path of the .deb
    local pkg=$1 ver f
    ver=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
        apt_update
        ver=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
    fi
    [ -n "$ver" ] && [ "$ver" != "(none)" ] || die "no Debian package $pkg"
    # One dir per package version: apt names files with the epoch escaped (1%3a...).
    local d="$DEBS/$pkg/${ver//:/_}"
    f=$(ls "$d"/*.deb 2>/dev/null | head -1 || true)
    if [ -z "$f" ]; then
        say "downloading $pkg $ver into $d (apt-get download; not installed on the host)"
        mkdir -p "$d"
        (cd "$d" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$ver" >&2) || die "apt-get download $pkg failed"
        f=$(ls "$d"/*.deb | head -1)
    fi
    echo "$f"
}
extract_deb() { # deb dir
    if [ ! -e "$2/.done" ]; then
        rm -rf "$2"
        mkdir -p "$2"
        dpkg-deb -x "$1" "$2"
        touch "$2/.done"
    fi
}

# The kernel ABI moves with security updates: resolve it from the meta package.
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$KPKG" ]; then
    apt_update
    KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$KPKG" ] || die "cannot resolve the kernel package behind linux-image-amd64"
KDEB=$(fetch_deb "$KPKG")
KDIR="$CACHE/${KPKG}"
extract_deb "$KDEB" "$KDIR"
KVER=$(ls "$KDIR/lib/modules" | head -1)
[ -f "$KDIR/boot/vmlinuz-$KVER" ] || die "no vmlinuz in $KDEB"
[ -f "$KDIR/lib/modules/$KVER/modules.dep" ] || depmod -b "$KDIR" "$KVER"

BBDIR="$CACHE/busybox-static"
extract_deb "$(fetch_deb busybox-static)" "$BBDIR"
CNIDIR="$CACHE/containernetworking-plugins"
extract_deb "$(fetch_deb containernetworking-plugins)" "$CNIDIR"
flock -u 8

# ---------------------------------------------------------------- project binaries
BINS=(device-plugin sriov kubelet-sim)
T_BUILD0=$(date +%s)
if [ "${VMLAB_NO_BUILD:-0}" != 1 ]; then
    command -v cargo >/dev/null || die "cargo not found"
    say "cargo build --profile $PROFILE -p device-plugin -p sriov-cni -p node-tests (target $TARGET)"
    if ! (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --profile "$PROFILE" -q \
        -p device-plugin -p sriov-cni -p node-tests --bin device-plugin --bin sriov --bin kubelet-sim >&2); then
        # One package at a time: a package that does not build must not hide the others.
        for b in device-plugin:device-plugin sriov-cni:sriov node-tests:kubelet-sim; do
            (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --profile "$PROFILE" -q -p "${b%%:*}" --bin "${b#*:}" >&2) ||
                say "warning: cargo build -p ${b%%:*} --bin ${b#*:} failed; its guest checks will fail"
        done
    fi
fi
BUILD_S=$(($(date +%s) - T_BUILD0))

# ---------------------------------------------------------------- initramfs
say "building the initramfs"
IRD="$WORK/initramfs"
rm -rf "$IRD"
mkdir -p "$IRD"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,proc,sys,dev,run,tmp,mnt/share,etc,root,opt/cni/bin,lib/vmlab}
mkdir -p "$IRD/var/lib" "$IRD/var/tmp"
ln -s ../run "$IRD/var/run"

cp "$BBDIR/bin/busybox" "$IRD/bin/busybox"
# One link per applet, except the ones iproute2 provides for real (busybox sh would
# otherwise run its own applet first, see NOTES.md).
for a in $("$IRD/bin/busybox" --list-full); do
    case "${a##*/}" in ip | tc | bridge | rdma | devlink | busybox | linuxrc) continue ;; esac
    [ -e "$IRD/$a" ] || ln -s /bin/busybox "$IRD/$a"
done
ln -sf /bin/busybox "$IRD/sbin/modprobe"

copy_with_libs() { # host-binary dest-in-initramfs
    local src=$1 dst=$2 lib
    install -D -m 0755 "$src" "$IRD$dst"
    # ldd prints "name => /path (addr)" and "/lib64/ld-linux-x86-64.so.2 (addr)".
    for lib in $(ldd "$src" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        [ -e "$IRD$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$IRD$lib"
    done
}
for b in ip tc bridge devlink rdma; do
    p=$(command -v "$b" || true)
    [ -z "$p" ] && for d in /usr/sbin /sbin /usr/bin /bin; do [ -x "$d/$b" ] && p="$d/$b" && break; done
    [ -n "$p" ] && copy_with_libs "$p" "/usr/sbin/$b"
done
[ -d /etc/iproute2 ] && cp -r /etc/iproute2 "$IRD/etc/"
copy_with_libs "$(command -v jq)" /usr/bin/jq
cp "$CNIDIR/usr/lib/cni/host-local" "$IRD/opt/cni/bin/host-local"
for b in "${BINS[@]}"; do
    if [ -x "$TARGET/$PROFILE_DIR/$b" ]; then
        copy_with_libs "$TARGET/$PROFILE_DIR/$b" "/usr/bin/$b"
        # debug info is most of a dev binary's size: keep it out of the initramfs
        command -v strip >/dev/null && strip "$IRD/usr/bin/$b"
    else
        say "warning: $TARGET/$PROFILE_DIR/$b not built; its guest checks will fail"
    fi
done

# Kernel modules: closure of each group in load order, as insmod lists the guest replays.
MODS_BOOT="virtio_pci 9pnet_virtio 9p"
MODS_NIC="igb igbvf"
MODS_RDMA="crc32_generic rdma_rxe ib_uverbs ib_umad rdma_ucm"
MODS_VFIO="vfio_pci vfio_iommu_type1"
MODS_EXTRA="veth"
modlist() { # group-name modules...
    local g=$1 m line f
    shift
    : >"$IRD/lib/vmlab/mods-$g"
    for m in "$@"; do
        modprobe -d "$KDIR" -S "$KVER" --show-depends "$m" 2>/dev/null | while read -r line; do
            case "$line" in
            insmod\ *)
                f=$(echo "$line" | awk '{print $2}')
                f=${f#"$KDIR"}
                if [ ! -e "$IRD$f" ]; then
                    mkdir -p "$(dirname "$IRD$f")"
                    case "$f" in
                    *.xz) xz -dc "$KDIR$f" >"$IRD${f%.xz}" ;;
                    *) cp "$KDIR$f" "$IRD$f" ;;
                    esac
                fi
                grep -qx "${f%.xz}" "$IRD/lib/vmlab/mods-$g" || echo "${f%.xz}" >>"$IRD/lib/vmlab/mods-$g"
                ;;
            esac
        done
    done
}
modlist boot $MODS_BOOT
modlist nic $MODS_NIC
modlist rdma $MODS_RDMA
modlist vfio $MODS_VFIO
modlist extra $MODS_EXTRA
[ -s "$IRD/lib/vmlab/mods-boot" ] || die "no module closure for $MODS_BOOT in $KPKG"
echo "$KVER" >"$IRD/lib/vmlab/kver"

mknod -m 600 "$IRD/dev/console" c 5 1
mknod -m 666 "$IRD/dev/null" c 1 3
install -m 0755 "$ROOT/tests/vmlab/init" "$IRD/init"
(cd "$IRD" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 >"$WORK/initramfs.cpio.gz")

# ---------------------------------------------------------------- 9p share: scenario in, results out
SHARE="$WORK/share"
rm -rf "$SHARE"
mkdir -p "$SHARE/out"
cp -r "$ROOT/tests/vmlab/guest" "$SHARE/guest"
echo "${VMLAB_ONLY:-}" >"$SHARE/only"

# ---------------------------------------------------------------- boot
# /dev/kvm can exist and still be unusable (nested KVM here aborts on MSR 0x10a or hangs
# with -cpu host), so boot the kernel with no root fs once: a working KVM reaches the
# "VFS: Unable to mount root fs" panic in a second or two. The verdict is cached per
# host kernel and QEMU version.
kvm_usable() {
    [ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
    local key verdict=no
    key="$(uname -r) $(qemu-system-x86_64 --version | head -1)"
    if [ -f "$CACHE/kvm-probe" ] && [ "$(head -1 "$CACHE/kvm-probe")" = "$key" ]; then
        [ "$(sed -n 2p "$CACHE/kvm-probe")" = yes ]
        return
    fi
    say "probing KVM (boot to the no-root-fs panic, at most 15 s)"
    timeout -k 2 15 qemu-system-x86_64 -machine q35 -accel kvm -cpu host -smp 1 -m 256 \
        -nodefaults -display none -no-reboot -monitor none -serial stdio \
        -kernel "$KDIR/boot/vmlinuz-$KVER" -append "console=ttyS0 panic=-1 loglevel=4" \
        </dev/null >"$WORK/kvm-probe.log" 2>&1 || true
    grep -q 'VFS: Unable to mount root fs' "$WORK/kvm-probe.log" && verdict=yes
    printf '%s\n%s\n' "$key" "$verdict" >"$CACHE/kvm-probe"
    say "KVM usable: $verdict (probe log $WORK/kvm-probe.log)"
    [ "$verdict" = yes ]
}
ACCEL=${VMLAB_ACCEL:-}
if [ -z "$ACCEL" ]; then
    if kvm_usable; then ACCEL=kvm; else ACCEL=tcg; fi
fi
CPU=max
[ "$ACCEL" = kvm ] && CPU=host
echo "$ACCEL" >"$SHARE/accel"
say "booting $KPKG ($KVER) in QEMU $(qemu-system-x86_64 --version | awk 'NR==1 {print $4}') accel=$ACCEL, timeout ${TIMEOUT}s"
SERIAL="$WORK/serial.log"
set +e
timeout --foreground -k 5 "$TIMEOUT" qemu-system-x86_64 \
    -machine q35,kernel-irqchip=split -accel "$ACCEL" -cpu "$CPU" -smp 2 -m 1024 \
    -nodefaults -display none -no-reboot -serial stdio -monitor none \
    -kernel "$KDIR/boot/vmlinuz-$KVER" -initrd "$WORK/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 no_timer_check intel_iommu=on iommu=pt" \
    -device intel-iommu,intremap=on,caching-mode=on \
    -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=02.0 \
    -device igb,id=pf0,bus=rp1,mac=52:54:00:12:34:56,netdev=n0 \
    -netdev hubport,id=n0,hubid=0 \
    -fsdev local,id=fs0,path="$SHARE",security_model=none \
    -device virtio-9p-pci,fsdev=fs0,mount_tag=share \
    </dev/null >"$SERIAL" 2>"$WORK/qemu.stderr"
qrc=$?
set -e
T1=$(date +%s.%N)
WALL=$(awk -v a="$T0" -v b="$T1" 'BEGIN {printf "%.1f", b - a}')

# ---------------------------------------------------------------- results
say "QEMU exited ($qrc)"
RES="$WORK/results.txt"
{
    [ -f "$SHARE/out/results" ] && cat "$SHARE/out/results"
    if [ ! -f "$SHARE/out/rc" ]; then
        if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
            echo "FAIL lab.vm-finished: QEMU killed after ${TIMEOUT}s (see $SERIAL)"
        else
            echo "FAIL lab.vm-finished: guest did not finish (qemu rc $qrc; see $SERIAL and $WORK/qemu.stderr)"
        fi
    fi
} >"$RES"
passed=$(grep -c '^PASS ' "$RES" || true)
failed=$(grep -c '^FAIL ' "$RES" || true)
{
    echo "wall: ${WALL}s (host, whole script; ${BUILD_S}s of it cargo build, profile $PROFILE), accel $ACCEL, kernel $KVER"
    [ -f "$SHARE/out/metrics" ] && sed 's/^/metric: /' "$SHARE/out/metrics"
} >>"$RES"
cat "$RES"
say "results in $RES, guest logs in $SHARE/out, serial console in $SERIAL"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]

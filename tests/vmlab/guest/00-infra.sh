# Lab infrastructure: the emulated 82576 PF, its VFs and the igb VF setters on a real kernel.
# Leaves: igb/igbvf loaded, PF up, 4 VFs with default settings. Exports PF_BDF, PF.
SYS=/sys/bus/pci/devices

vf_bdf() { basename "$(readlink "$SYS/$PF_BDF/virtfn$1")"; }
vf_net() { ls "$SYS/$(vf_bdf "$1")/net" 2>/dev/null; }
vf_count_ready() { # N: true when N VFs exist, each bound to igbvf with a netdev
    [ "$(ls -d "$SYS/$PF_BDF"/virtfn* 2>/dev/null | wc -l)" = "$1" ] || return 1
    _i=0
    while [ "$_i" -lt "$1" ]; do
        [ -n "$(vf_net "$_i")" ] || return 1
        _i=$((_i + 1))
    done
}
set_numvfs() { # N: via 0 (the kernel refuses 4 -> 2 with EBUSY), waits for the netdevs
    echo 0 >"$SYS/$PF_BDF/sriov_numvfs" || return 1
    [ "$1" = 0 ] && return 0
    echo "$1" >"$SYS/$PF_BDF/sriov_numvfs" || return 1
    wait_for 30 vf_count_ready "$1" && wait_for 10 pf_carrier
}
# The VF line of `ip -d link show PF` for VF N (one line per VF).
vf_line() { ip -d link show "$PF" | grep "^ *vf $1 "; }

echo "kernel $(uname -r), clock $(now_us) us"
loadmods nic
PF_BDF=
for d in "$SYS"/*; do
    if [ "$(cat "$d/vendor")" = 0x8086 ] && [ "$(cat "$d/device")" = 0x10c9 ]; then PF_BDF=$(basename "$d"); fi
done
if [ -z "$PF_BDF" ] || ! wait_for 10 ls "$SYS/$PF_BDF/net/"; then
    fail lab.pf "no igb PF (8086:10c9) with a netdev; lspci: $(ls $SYS | oneline)"
    return 0 2>/dev/null || exit 0
fi
PF=$(ls "$SYS/$PF_BDF/net")
pass lab.pf "igb PF $PF_BDF netdev $PF, sriov_totalvfs $(cat "$SYS/$PF_BDF/sriov_totalvfs")"
ip link set lo up
ip link set "$PF" up
# igb refuses max_tx_rate (EINVAL) while the PF has no link: wait for carrier.
pf_carrier() { [ "$(cat "/sys/class/net/$PF/carrier" 2>/dev/null)" = 1 ]; }
wait_for 10 pf_carrier || fail lab.pf-carrier "$PF has no carrier after 10 s"

t0=$(now_us)
if echo 4 >"$SYS/$PF_BDF/sriov_numvfs" && wait_for 30 vf_count_ready 4 && wait_for 10 pf_carrier; then
    t1=$(now_us)
    metric numvfs_0_to_4_ms $(((t1 - t0) / 1000))
    got=""
    for i in 0 1 2 3; do
        b=$(vf_bdf $i)
        got="$got $i=$b/$(basename "$(readlink "$SYS/$b/driver")")/$(vf_net $i)/pf=$(basename "$(readlink "$SYS/$b/physfn")")"
    done
    pass lab.vfs "4 VFs:$got"
else
    fail lab.vfs "echo 4 > sriov_numvfs: VFs not ready in 30 s: $(ls "$SYS/$PF_BDF" | grep virtfn | oneline)"
fi

grp=$(basename "$(readlink "$SYS/$(vf_bdf 0)/iommu_group")" 2>/dev/null)
if [ -n "$grp" ] && [ "$grp" != "$(basename "$(readlink "$SYS/$(vf_bdf 1)/iommu_group")")" ]; then
    pass lab.iommu "emulated VT-d: VF0 in iommu group $grp, each VF its own group"
else
    fail lab.iommu "VF0 iommu_group '$grp' (expected one group per VF with intel-iommu)"
fi

# Every setter the emulated NIC supports, read back from the PF.
if ip link set "$PF" vf 3 mac 02:00:00:00:03:03 vlan 33 qos 3 proto 802.1Q &&
    # enabling VFs resets the PF: its link (and with it max_tx_rate) may need a moment
    wait_for 5 ip link set "$PF" vf 3 spoofchk off trust on max_tx_rate 100; then
    line=$(vf_line 3)
    case "$line" in
    *"link/ether 02:00:00:00:03:03"*"vlan 33, qos 3"*"max_tx_rate 100Mbps"*"spoof checking off"*"trust on"*)
        pass lab.igb-setters "ip -d link show: $line" ;;
    *) fail lab.igb-setters "read-back differs: $line" ;;
    esac
else
    fail lab.igb-setters "ip link set $PF vf 3 ... refused"
fi
# Back to defaults so later scenarios start clean: a VF reset needs numvfs 0 -> 4.
check lab.numvfs-cycle "sriov_numvfs 4 -> 0 -> 4 resets the VFs" set_numvfs 4
echo "--- VF lines after reset:"
ip -d link show "$PF" | grep '^ *vf '

# vfio-pci needs the emulated IOMMU (no noiommu in this kernel). bind_vfio BDF / bind_igbvf BDF.
bind_vfio() {
    loadmods vfio
    echo vfio-pci >"$SYS/$1/driver_override"
    [ -e "$SYS/$1/driver" ] && echo "$1" >"$SYS/$1/driver/unbind"
    echo "$1" >/sys/bus/pci/drivers_probe
    [ "$(basename "$(readlink "$SYS/$1/driver")")" = vfio-pci ]
}
bind_igbvf() {
    echo >"$SYS/$1/driver_override"
    [ -e "$SYS/$1/driver" ] && echo "$1" >"$SYS/$1/driver/unbind"
    echo "$1" >/sys/bus/pci/drivers_probe
    wait_for 10 ls "$SYS/$1/net/"
}
# uverbs_of IBDEV: the uverbsN char device name of an RDMA device
uverbs_of() {
    for _u in /sys/class/infiniband_verbs/uverbs*; do
        [ "$(cat "$_u/ibdev")" = "$1" ] && basename "$_u"
    done
}
# need_bin CHECKNAME BINARY: fails CHECKNAME when the project binary did not build
need_bin() {
    [ -x "/usr/bin/$2" ] && return 0
    fail "$1" "/usr/bin/$2 is not in the initramfs (cargo build failed or not written yet)"
    return 1
}

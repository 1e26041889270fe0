# The device plugin against the kubelet simulator inside the guest: a VF pool
# (sriov-network-device-plugin config) and rdma/hca over the PF's rxe (k8s-rdma-shared-dev-plugin
# config), each served by its own daemon as deployed; Allocate hands out the real char
# devices; sriov_numvfs 4 -> 0 -> 2 reaches the device lists.
# kubelet-sim is one-shot: each run recreates kubelet.sock (a kubelet restart), the
# daemons re-register and send their current list over a new ListAndWatch stream.
if need_bin plugin.registered device-plugin && need_bin plugin.registered kubelet-sim; then
    DPD=/var/lib/kubelet/device-plugins
    DEVINFO=/var/run/k8s.cni.cncf.io/devinfo/dp
    mkdir -p "$DPD"
    loadmods rdma
    rdma link add rxe0 type rxe netdev "$PF" || fail plugin.rxe "rdma link add rxe0 on $PF failed"
    U0=$(uverbs_of rxe0)
    # VF 3 on vfio-pci forms its own pool (DPDK-style), VFs 0-2 the netdev pool.
    VF3=$(vf_bdf 3)
    bind_vfio "$VF3" || fail plugin.vfio "cannot bind $VF3 to vfio-pci"
    G3=$(basename "$(readlink "$SYS/$VF3/iommu_group")")
    cat >/tmp/sriovdp.json <<EOC
{"resourceList":[{"resourceName":"igb_vf","selectors":{"vendors":["8086"],"devices":["10ca"],"drivers":["igbvf"]}},
 {"resourceName":"igb_vfio","deviceType":"accelerator","selectors":{"vendors":["8086"],"drivers":["vfio-pci"]}}]}
EOC
    cat >/tmp/rdmashared.json <<EOC
{"configList":[{"resourceName":"hca","rdmaHcaMax":10,"selectors":{"vendors":["8086"],"ifNames":["$PF"]}}]}
EOC
    ksim() { # OUTFILE ARGS...: one kubelet-sim run
        _f=$1
        shift
        kubelet-sim --dir "$DPD" --timeout 15 "$@" >"$_f" 2>&1
    }
    # kubelet first (it wipes the directory), then the daemons.
    ksim /tmp/ks1.out --expect intel.com/igb_vf,intel.com/igb_vfio,rdma/hca --allocate rdma/hca \
        --allocate intel.com/igb_vfio --allocate intel.com/igb_vf &
    KS=$!
    wait_for 10 test -S "$DPD/kubelet.sock" || fail plugin.registered "kubelet-sim made no kubelet.sock"
    device-plugin --config-file /tmp/sriovdp.json --device-plugin-path "$DPD" --device-info-dir "$DEVINFO" >"$OUT/dp-sriov.log" 2>&1 &
    DP1=$!
    device-plugin --config-file /tmp/rdmashared.json --device-plugin-path "$DPD" >"$OUT/dp-hca.log" 2>&1 &
    DP2=$!
    wait $KS
    rc=$?
    cp /tmp/ks1.out "$OUT/kubelet-sim-1.out"
    # rc is non-zero when a later --allocate fails: that is judged by its own check
    if grep -q '^registered intel.com/igb_vf (version v1beta1' /tmp/ks1.out &&
        grep -q '^registered intel.com/igb_vfio (version v1beta1' /tmp/ks1.out &&
        grep -q '^registered rdma/hca (version v1beta1' /tmp/ks1.out; then
        pass plugin.registered "intel.com/igb_vf, intel.com/igb_vfio and rdma/hca registered (v1beta1)"
    else
        fail plugin.registered "kubelet-sim rc $rc: $(tail -n 4 /tmp/ks1.out | oneline) daemon: $(tail -n 2 "$OUT/dp-sriov.log" | oneline)"
    fi
    want=""
    for i in 0 1 2; do want="$want $(vf_bdf $i)"; done
    listed() { # FILE RESOURCE: IDs of the listed devices, sorted
        awk -v r="$2" '$0 ~ "^  devices of " r ":" {on = 1; next} on && /^    / {print $1; next} {on = 0}' "$1" | sort | tr '\n' ' '
    }
    expect_eq plugin.vf-list "intel.com/igb_vf lists the 3 igbvf VFs, healthy" \
        "devices of intel.com/igb_vf: 3 listed, 3 healthy |$(echo $want | tr ' ' '\n' | sort | tr '\n' ' ')" \
        "$(grep -o 'devices of intel.com/igb_vf: .*' /tmp/ks1.out | head -n 1) |$(listed /tmp/ks1.out intel.com/igb_vf)"
    expect_eq plugin.hca-list "rdma/hca advertises rdmaHcaMax shared IDs" \
        "devices of rdma/hca: 10 listed, 10 healthy" "$(grep -o 'devices of rdma/hca: .*' /tmp/ks1.out | head -n 1)"
    # Allocate rdma/hca: device specs for rxe0's char devices + rdma_cm, all real char devices.
    section() { # RESOURCE: host paths of the device specs in its allocate block
        awk -v r="$1" '/^allocate / {on = ($4 == r)} on && / -> / {print $1}' /tmp/ks1.out | sort | tr '\n' ' '
    }
    specs=$(section rdma/hca)
    bad=""
    for s in $specs; do [ -c "$s" ] || bad="$bad $s"; done
    case " $specs" in
    *" /dev/infiniband/$U0 "*) if echo "$specs" | grep -q rdma_cm && [ -z "$bad" ]; then
        pass plugin.alloc-hca "Allocate rdma/hca -> real char devices: $specs"
    else
        fail plugin.alloc-hca "specs '$specs' (not char devices:$bad; rdma_cm expected)"
    fi ;;
    *) fail plugin.alloc-hca "no /dev/infiniband/$U0 (rxe0) in the specs: '$specs'" ;;
    esac
    # Allocate the vfio VF: device specs for its group and the container device.
    specs=$(section intel.com/igb_vfio)
    if [ "$specs" = "/dev/vfio/$G3 /dev/vfio/vfio " ] && [ -c "/dev/vfio/$G3" ] && [ -c /dev/vfio/vfio ]; then
        pass plugin.alloc-vfio "Allocate intel.com/igb_vfio ($VF3, group $G3) -> $specs"
    else
        fail plugin.alloc-vfio "specs '$specs', expected /dev/vfio/$G3 /dev/vfio/vfio: $(grep -A6 'x intel.com/igb_vfio' /tmp/ks1.out | oneline)"
    fi
    bind_igbvf "$VF3" || fail plugin.vfio "$VF3 did not come back to igbvf"
    # Allocate a VF: env with its PCI address, device-info file naming it.
    vf=$(grep -o 'PCIDEVICE_INTEL_COM_IGB_VF=[0-9a-f:.]*' /tmp/ks1.out | head -n 1 | cut -d= -f2)
    if [ -n "$vf" ] && echo " $want " | grep -q " $vf " &&
        [ "$(jq -r '.pci."pci-address"' "$DEVINFO/intel.com-igb_vf-$vf-device.json" 2>/dev/null)" = "$vf" ]; then
        pass plugin.alloc-vf "PCIDEVICE_INTEL_COM_IGB_VF=$vf, device-info file names it"
    else
        fail plugin.alloc-vf "env VF '$vf'; device-info: $(ls "$DEVINFO" 2>&1 | oneline); $(grep -A3 'x intel.com/igb_vf' /tmp/ks1.out | oneline)"
    fi

    # VF count changes reach the lists (4 -> 0 -> 2; the kernel refuses 4 -> 2 directly).
    count_is() { # N [IDS]: a fresh kubelet-sim sees N VFs (and exactly IDS)
        kubelet-sim --dir "$DPD" --timeout 5 --expect intel.com/igb_vf >/tmp/ksn.out 2>&1 || return 1
        grep -q "devices of intel.com/igb_vf: $1 listed" /tmp/ksn.out || return 1
        [ -z "$2" ] || [ "$(listed /tmp/ksn.out intel.com/igb_vf)" = "$2" ]
    }
    echo 0 >"$SYS/$PF_BDF/sriov_numvfs"
    if wait_for 12 count_is 0; then
        pass plugin.numvfs-0 "sriov_numvfs 0: intel.com/igb_vf lists 0 devices"
    else
        fail plugin.numvfs-0 "$(grep 'devices of\|rror' /tmp/ksn.out | oneline)"
    fi
    echo 2 >"$SYS/$PF_BDF/sriov_numvfs"
    wait_for 30 vf_count_ready 2
    two="$(vf_bdf 0) $(vf_bdf 1) "
    if wait_for 12 count_is 2 "$two"; then
        pass plugin.numvfs-2 "sriov_numvfs 2: intel.com/igb_vf lists $two"
    else
        fail plugin.numvfs-2 "$(grep -A3 'devices of\|rror' /tmp/ksn.out | oneline)"
    fi
    kill "$DP1" "$DP2"
    wait "$DP1" "$DP2" 2>/dev/null
    rdma link delete rxe0
    set_numvfs 4 || fail plugin.numvfs-restore "could not go back to 4 VFs"
fi

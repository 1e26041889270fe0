# Discovery on the real sysfs: PF + 4 VFs, rxe tied to its netdev and PCI function,
# the shared HCA selector finding rxe, vfio-pci with its IOMMU group.
loadmods rdma
VF0=$(vf_bdf 0)
VF0_NET=$(vf_net 0)
VF3=$(vf_bdf 3)
if rdma link add rxe0 type rxe netdev "$PF" && rdma link add rxe1 type rxe netdev "$VF0_NET"; then
    u0=$(uverbs_of rxe0)
    u1=$(uverbs_of rxe1)
    if [ -c "/dev/infiniband/$u0" ] && [ -c "/dev/infiniband/$u1" ] && [ -c /dev/infiniband/rdma_cm ] &&
        [ "$(cat /sys/class/infiniband/rxe1/parent)" = "$VF0_NET" ]; then
        pass lab.rxe "rxe0 on $PF ($u0), rxe1 on $VF0_NET ($u1), parent file names the netdev; /dev/infiniband: $(ls /dev/infiniband | oneline)"
    else
        fail lab.rxe "char devices or parent missing: $(ls -l /dev/infiniband | oneline)"
    fi
else
    fail lab.rxe "rdma link add refused"
fi

if need_bin discover.run device-plugin; then
    J=/tmp/discover.json
    if device-plugin discover --json >$J 2>/tmp/discover.err; then
        pass discover.run "device-plugin discover --json: $(jq '.devices | length' $J) devices"
        cp $J "$OUT/discover.json"
        dev() { jq -c --arg a "$1" '.devices[] | select(.pci_address == $a)' $J; }
        got=$(dev "$PF_BDF" | jq -c '[.driver, .pf_pci_address, .vf_index, .netdevs, .total_vfs, .num_vfs]')
        expect_eq discover.pf "PF $PF_BDF [driver, pf, vf_index, netdevs, total_vfs, num_vfs]" \
            "[\"igb\",null,null,[\"$PF\"],7,4]" "$got"
        for i in 0 1 2 3; do
            b=$(vf_bdf $i)
            got=$(dev "$b" | jq -c '[.driver, .pf_pci_address, .vf_index, .netdevs, .total_vfs, .num_vfs, .vendor, .device]')
            expect_eq discover.vf$i "VF $b [driver, pf, vf_index, netdevs, total_vfs, num_vfs, vendor, device]" \
                "[\"igbvf\",\"$PF_BDF\",$i,[\"$(vf_net $i)\"],null,null,\"8086\",\"10ca\"]" "$got"
        done
        # rxe is not a PCI child: discovery must tie it through its parent netdev.
        got=$(dev "$VF0" | jq -c '[.rdma_devices[] | {name, uverbs: [.char_devices[] | select(test("uverbs"))]}]')
        expect_eq discover.rxe-vf "rxe1 on VF0 ($VF0_NET) with its uverbs node" \
            "[{\"name\":\"rxe1\",\"uverbs\":[\"/dev/infiniband/$u1\"]}]" "$got"
        got=$(dev "$PF_BDF" | jq -c '[.rdma_devices[] | .name]')
        expect_eq discover.rxe-pf "rxe0 on the PF" '["rxe0"]' "$got"
        bad=""
        for c in $(jq -r '.devices[].rdma_devices[]?.char_devices[]' $J); do [ -c "$c" ] || bad="$bad $c"; done
        if [ -z "$bad" ] && [ -n "$(jq -r '.devices[].rdma_devices[]?.char_devices[]' $J)" ]; then
            pass discover.char-devices "every listed char device exists: $(jq -r '[.devices[].rdma_devices[]?.char_devices[]] | unique | join(" ")' $J)"
        else
            fail discover.char-devices "listed but not a char device:$bad"
        fi
    else
        fail discover.run "exit $?: $(tail -n 5 /tmp/discover.err | oneline)"
    fi

    # Shared HCA (k8s-rdma-shared-dev-plugin format): selectors pick the PF's rxe, not VF0's.
    cat >/tmp/hca.json <<EOC
{"configList":[{"resourceName":"hca","resourcePrefix":"rdma","rdmaHcaMax":10,
  "selectors":{"vendors":["8086"],"ifNames":["$PF"]}}]}
EOC
    if device-plugin discover --config-file /tmp/hca.json --json >$J 2>/tmp/discover.err; then
        got=$(jq -c --arg pf "$PF_BDF" --arg vf "$VF0" \
            '[(.devices[] | select(.pci_address == $pf) | .pools), (.devices[] | select(.pci_address == $vf) | .pools)]' $J)
        expect_eq discover.hca-selector "pools of [PF, VF0] with ifNames [$PF]" '[["rdma/hca"],[]]' "$got"
    else
        fail discover.hca-selector "discover --config-file exit $?: $(tail -n 5 /tmp/discover.err | oneline)"
    fi

    # vfio-pci with the emulated IOMMU: the VF shows its group.
    grp=$(basename "$(readlink "$SYS/$VF3/iommu_group")")
    if bind_vfio "$VF3" && [ -c "/dev/vfio/$grp" ]; then
        if device-plugin discover --json >$J 2>/tmp/discover.err; then
            got=$(jq -c --arg a "$VF3" '.devices[] | select(.pci_address == $a) | [.driver, .netdevs, (.iommu_group | tostring)]' $J)
            expect_eq discover.vfio "VF3 on vfio-pci [driver, netdevs, iommu_group] (/dev/vfio/$grp exists)" \
                "[\"vfio-pci\",[],\"$grp\"]" "$got"
        else
            fail discover.vfio "discover exit $?: $(tail -n 5 /tmp/discover.err | oneline)"
        fi
    else
        fail discover.vfio "binding $VF3 to vfio-pci failed: driver $(readlink "$SYS/$VF3/driver"), /dev/vfio: $(ls /dev/vfio 2>&1 | oneline)"
    fi
    bind_igbvf "$VF3" || fail discover.vfio-unbind "$VF3 did not come back to igbvf"
else
    fail discover.pf "not run: no device-plugin binary"
fi
rdma link delete rxe1
rdma link delete rxe0

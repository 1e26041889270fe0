# DPDK mode: a VF bound to vfio-pci has no netdev; ADD configures it on the PF only
# (no move), DEL restores the PF's view of it.
if need_bin dpdk.add sriov; then
    VF=$(vf_bdf 3)
    if bind_vfio "$VF"; then
        ip netns add podd
        cat >/tmp/cd.json <<EOC
{"cniVersion":"1.0.0","name":"vmlab-dpdk","type":"sriov","deviceID":"$VF",
 "mac":"02:44:00:00:00:03","vlan":300,"vlanQoS":1,"spoofchk":"off","trust":"on","max_tx_rate":50}
EOC
        snap /tmp/d0
        if cni ADD ctrd net1 /run/netns/podd /tmp/cd.json; then
            cp /tmp/cni.out /tmp/rd.json
            case "$(vf_line 3)" in
            *"link/ether 02:44:00:00:00:03"*"vlan 300, qos 1"*"max_tx_rate 50Mbps"*"spoof checking off"*"trust on"*)
                pass dpdk.add "vfio-pci VF configured on the PF: $(vf_line 3)" ;;
            *) fail dpdk.add "VF 3 settings missing: $(vf_line 3)" ;;
            esac
            expect_eq dpdk.no-move "pod netns untouched, VF still on vfio-pci" "lo vfio-pci" \
                "$(netns_links podd) $(basename "$(readlink "$SYS/$VF/driver")")"
            with_prev /tmp/cd.json /tmp/rd.json >/tmp/cdp.json
            if cni DEL ctrd net1 /run/netns/podd /tmp/cdp.json; then
                snap /tmp/d1
                same_snap dpdk.del "DEL restores the VF table, cache empty" /tmp/d0 /tmp/d1
            else
                fail dpdk.del "$(cni_says $?)"
            fi
        else
            fail dpdk.add "$(cni_says $?)"
        fi
        ip netns del podd
    else
        fail dpdk.add "cannot bind $VF to vfio-pci"
    fi
    bind_igbvf "$VF" || fail dpdk.rebind "$VF did not come back to igbvf"
fi

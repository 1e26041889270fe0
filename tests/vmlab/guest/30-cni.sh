# sriov ADD/CHECK/DEL on real VFs: every setting igb supports, read back from the kernel;
# traffic between two VFs in two pod netns; DEL restores everything exactly; DEL twice.
if need_bin cni.add sriov; then
    VF=$(vf_bdf 0)
    VFN=$(vf_net 0)
    VF2=$(vf_bdf 1)
    ip netns add pod1
    ip netns add pod2
    snap /tmp/s0
    mkconf "$VF" '"mac":"02:11:22:33:44:55","vlan":100,"vlanQoS":2,"vlanProto":"802.1q","spoofchk":"off","trust":"on","max_tx_rate":200,' >/tmp/c1.json
    if cni ADD ctr1 net1 /run/netns/pod1 /tmp/c1.json; then
        cp /tmp/cni.out /tmp/r1.json
        pass cni.add "ADD $VF ($VFN) into pod1 as net1: $(jq -c '[.interfaces[]?.name, .ips[]?.address]' /tmp/r1.json)"
        line=$(vf_line 0)
        case "$line" in
        *"link/ether 02:11:22:33:44:55"*"vlan 100, qos 2"*"max_tx_rate 200Mbps"*"spoof checking off"*"trust on"*)
            pass cni.add-vf-settings "ip -d link show $PF: $line" ;;
        *) fail cni.add-vf-settings "mac/vlan/qos/rate/spoofchk/trust not all on VF 0: $line" ;;
        esac
        got=$(vf_json 0 | jq -c '[.address, .vlan_list[0].vlan, .vlan_list[0].qos, (.vlan_list[0].protocol // "802.1Q"), .rate.max_tx, .spoofchk, .trust]')
        expect_eq cni.add-vf-json "ip -j -d vfinfo_list[0] [mac, vlan, qos, proto, max_tx, spoofchk, trust]" \
            '["02:11:22:33:44:55",100,2,"802.1Q",200,false,true]' "$got"
        ip4=$(jq -r '.ips[0].address' /tmp/r1.json)
        got=$(ip -n pod1 -j addr show net1 | jq -c --arg a "${ip4%/*}" '[.[0].ifname, .[0].address, ([.[0].addr_info[] | select(.local == $a)] | length), (.[0].flags | index("UP") != null)]')
        expect_eq cni.add-netdev "pod1 net1 [name, MAC on the netdev, host-local address $ip4 present, UP]" \
            '["net1","02:11:22:33:44:55",1,true]' "$got"
        if [ -z "$(ls /sys/class/net | grep -x "$VFN")" ] && [ -z "$(ls "$SYS/$VF/net" 2>/dev/null)" ]; then
            pass cni.add-moved "$VFN left the init netns"
        else
            fail cni.add-moved "$VFN still visible in the init netns: $(ls /sys/class/net | oneline)"
        fi
        check cni.add-cache "cache entry written" ls "$CACHE_DIR/ctr1-net1"
        with_prev /tmp/c1.json /tmp/r1.json >/tmp/c1p.json
        if cni CHECK ctr1 net1 /run/netns/pod1 /tmp/c1p.json; then
            pass cni.check "CHECK passes on the configured VF"
        else
            fail cni.check "$(cni_says $?)"
        fi
        # CHECK must notice a change behind its back (vlan changed on the PF).
        ip link set "$PF" vf 0 vlan 101 qos 2
        if cni CHECK ctr1 net1 /run/netns/pod1 /tmp/c1p.json; then
            fail cni.check-detects "CHECK passed although VF 0 vlan was changed to 101"
        else
            pass cni.check-detects "CHECK fails after vlan changed behind its back: $(jq -r '.msg' /tmp/cni.out 2>/dev/null | cut -c1-160)"
        fi
        ip link set "$PF" vf 0 vlan 100 qos 2

        # Traffic between two VFs (the emulated 82576 switches VF to VF internally).
        # Same port VLAN on both VFs: the VEB switches within a VLAN.
        mkconf "$VF2" '"mac":"02:11:22:33:44:66","vlan":100,' >/tmp/c2.json
        if cni ADD ctr2 net1 /run/netns/pod2 /tmp/c2.json; then
            cp /tmp/cni.out /tmp/r2.json
            ip4b=$(jq -r '.ips[0].address' /tmp/r2.json)
            lu() { ip -n "$1" link show net1 | grep -q LOWER_UP; }
            if wait_for 20 lu pod1 && wait_for 20 lu pod2 &&
                ip netns exec pod1 /bin/ping -c 2 -w 10 "${ip4b%/*}" >/tmp/ping.out 2>&1; then
                pass cni.traffic "pod1 ($ip4) -> pod2 ($ip4b) over two VFs: $(tail -n 1 /tmp/ping.out)"
            else
                fail cni.traffic "ping ${ip4b%/*} from pod1: $(tail -n 3 /tmp/ping.out | oneline); links $(ip -n pod1 link show net1 | head -1) / $(ip -n pod2 link show net1 | head -1)"
            fi
            with_prev /tmp/c2.json /tmp/r2.json >/tmp/c2p.json
            # ctr2's VF is untrusted: igb refuses a VF-side MAC change while an admin MAC is
            # set, so DEL must clear the PF-side MAC before writing the netdev's MAC back.
            if cni DEL ctr2 net1 /run/netns/pod2 /tmp/c2p.json; then
                pass cni.del-untrusted "DEL of an untrusted VF with an admin MAC"
            else
                fail cni.del-untrusted "$(cni_says $?)"
                # clean up by hand so later checks see only their own effects
                ip link set "$PF" vf 1 mac 00:00:00:00:00:00
                cni DEL ctr2 net1 /run/netns/pod2 /tmp/c2p.json || echo "retry DEL ctr2: $(cni_says $?)"
            fi
        else
            fail cni.traffic "ADD of the second VF failed: $(cni_says $?)"
        fi

        if cni DEL ctr1 net1 /run/netns/pod1 /tmp/c1p.json; then
            pass cni.del "DEL returned success"
        else
            fail cni.del "$(cni_says $?)"
        fi
        snap /tmp/s1
        same_snap cni.del-restores "ip -j -d link show (all links, VF table), cache, leases identical to before ADD" /tmp/s0 /tmp/s1
        expect_eq cni.del-netns "pod1 holds only lo after DEL" lo "$(netns_links pod1)"
        if cni DEL ctr1 net1 /run/netns/pod1 /tmp/c1p.json; then
            snap /tmp/s2
            same_snap cni.del-twice "second DEL succeeds and changes nothing" /tmp/s0 /tmp/s2
        else
            fail cni.del-twice "$(cni_says $?)"
        fi
    else
        fail cni.add "$(cni_says $?)"
        cni DEL ctr1 net1 /run/netns/pod1 /tmp/c1.json
    fi
    ip netns del pod1
    ip netns del pod2
fi

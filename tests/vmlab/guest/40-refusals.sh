# Real kernel refusals as failure injection: each ADD gives other settings before the
# refused one, must fail with CNI error JSON naming the setting, and leave the VF, its
# netdev, the cache and IPAM exactly as before.
# refused NAME DEVICEID 'SETTINGS,' REGEX-FOR-THE-SETTING
refused() {
    mkconf "$2" "$3" >/tmp/cr.json
    snap /tmp/r0
    if cni ADD ctr-"$1" net1 /run/netns/podr /tmp/cr.json; then
        fail refuse."$1" "ADD succeeded although the kernel refuses it: $(cni_says 0)"
        cni DEL ctr-"$1" net1 /run/netns/podr /tmp/cr.json
    else
        rc=$?
        msg=$(jq -r '.msg + " " + (.details // "")' /tmp/cni.out 2>/dev/null)
        code=$(jq -r '.code' /tmp/cni.out 2>/dev/null)
        if echo "$msg" | grep -Eqi "$4"; then
            pass refuse."$1" "rc $rc, code $code: $(echo "$msg" | cut -c1-200)"
        else
            fail refuse."$1" "error does not name the setting (/$4/): $(cni_says $rc)"
        fi
    fi
    snap /tmp/r1
    same_snap refuse."$1"-unchanged "VF, netdevs, cache and leases exactly as before" /tmp/r0 /tmp/r1
    expect_eq refuse."$1"-netns "pod netns still holds only lo" lo "$(netns_links podr)"
}
if need_bin refuse.run sriov; then
    ip netns add podr
    pre='"mac":"02:22:00:00:00:01","vlan":42,"vlanQoS":3,"spoofchk":"off","trust":"on",'
    refused vlanproto-8021ad "$(vf_bdf 0)" "$pre\"vlanProto\":\"802.1ad\"," 'vlanProto|802\.1ad'
    refused link-state "$(vf_bdf 0)" "$pre\"link_state\":\"enable\"," 'link_state|link.state'
    refused min-tx-rate "$(vf_bdf 0)" "$pre\"max_tx_rate\":100,\"min_tx_rate\":10," 'min_tx_rate'
    # The regression from today's sriov-cni: a VF that already had a non-default state.
    ip link set "$PF" vf 1 vlan 7 trust on
    refused prestate-restored "$(vf_bdf 1)" "$pre\"vlanProto\":\"802.1ad\"," 'vlanProto|802\.1ad'
    case "$(vf_line 1)" in
    *"vlan 7,"*"trust on"*) pass refuse.prestate-kept "VF 1 keeps vlan 7, trust on: $(vf_line 1)" ;;
    *) fail refuse.prestate-kept "VF 1 lost its vlan 7 / trust on: $(vf_line 1)" ;;
    esac
    ip link set "$PF" vf 1 vlan 0 trust off
    ip netns del podr

    # rxe cannot move an RDMA device into a netns (EOPNOTSUPP). The mode can only be
    # switched while no other netns exists, so switch first, then make the pod netns.
    loadmods rdma
    VFN2=$(vf_net 2)
    # (netns teardown is asynchronous: earlier scenarios' pod netns may still be going)
    if wait_for 15 rdma system set netns exclusive && rdma link add rxe2 type rxe netdev "$VFN2"; then
        ip netns add podr
        refused rdma-netns "$(vf_bdf 2)" '"mac":"02:22:00:00:00:02","vlan":43,' 'rdma|rxe2'
        expect_eq refuse.rdma-netns-rxe "rxe2 still exists on $VFN2" "$VFN2" "$(cat /sys/class/infiniband/rxe2/parent 2>/dev/null)"
        ip netns del podr
        rdma link delete rxe2
        # netns cleanup is asynchronous; switching back needs the netns gone
        wait_for 10 rdma system set netns shared || fail refuse.rdma-shared "cannot switch back to shared"
    else
        fail refuse.rdma-netns "cannot set up rxe2 in exclusive mode: $(rdma system show)"
    fi
fi

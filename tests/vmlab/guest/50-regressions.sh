# Where today's sriov-cni was seen to leave things behind on these very VFs.
if need_bin regress.run sriov; then
    VF=$(vf_bdf 0)
    VFN=$(vf_net 0)
    # trusted here (igb lets a trusted VF override its admin MAC), untrusted in the cycles
    mkconf "$VF" '"mac":"02:33:00:00:00:01","vlan":9,"spoofchk":"off","trust":"on",' >/tmp/cg.json
    mkconf "$VF" '"mac":"02:33:00:00:00:02","vlan":10,"spoofchk":"off",' >/tmp/cgu.json

    # DEL after the pod netns was deleted: the kernel returns the VF netdev to the init
    # netns under the pod-side name (net1); DEL must rename it back and restore settings.
    ip netns add podg
    snap /tmp/g0
    if cni ADD ctrg net1 /run/netns/podg /tmp/cg.json; then
        ip netns del podg
        if wait_for 15 ip link show net1; then
            if cni DEL ctrg net1 /run/netns/podg /tmp/cg.json; then
                snap /tmp/g1
                same_snap regress.del-after-netns-gone "VF back as $VFN with its settings after DEL without netns" /tmp/g0 /tmp/g1
            else
                fail regress.del-after-netns-gone "DEL failed: $(cni_says $?)"
            fi
        else
            fail regress.del-after-netns-gone "VF netdev did not return to the init netns: $(ls /sys/class/net | oneline)"
        fi
    else
        fail regress.del-after-netns-gone "ADD failed: $(cni_says $?)"
    fi

    # A DEL that fails part-way keeps its cache so a retry finishes: occupy the VF's
    # original name so the rename back cannot succeed, then free it and retry.
    ip netns add podg
    snap /tmp/g0
    if cni ADD ctrg net1 /run/netns/podg /tmp/cg.json; then
        loadmods extra
        if ! ip link add "$VFN" type veth peer name vmlabpeer; then
            fail regress.del-partial "lab: cannot create the veth $VFN that blocks the rename"
        elif cni DEL ctrg net1 /run/netns/podg /tmp/cg.json; then
            fail regress.del-partial "DEL reported success while $VFN was taken: $(cni_says 0); VF now $(ls "$SYS/$VF/net" 2>/dev/null)"
        elif [ -e "$CACHE_DIR/ctrg-net1" ]; then
            pass regress.del-partial "DEL failed while $VFN was taken and kept its cache: $(jq -r .msg /tmp/cni.out 2>/dev/null | cut -c1-160)"
        else
            fail regress.del-partial "DEL failed and dropped its cache: $(cni_says 1)"
        fi
        ip link del "$VFN" 2>/dev/null
        if cni DEL ctrg net1 /run/netns/podg /tmp/cg.json; then
            snap /tmp/g1
            same_snap regress.del-retry "retried DEL restores everything" /tmp/g0 /tmp/g1
        else
            fail regress.del-retry "retry DEL failed: $(cni_says $?)"
        fi
    else
        fail regress.del-partial "ADD failed: $(cni_says $?)"
    fi
    ip netns del podg

    # Ten ADD/DEL cycles leave the PF's VF table (incl. the MAC the PF reports) as at start.
    vf_can_set_mac() { # NETDEV MAC: set the netdev's own MAC and put the old one back
        _old=$(cat /sys/class/net/"$1"/address)
        ip link set "$1" address "$2" 2>/dev/null && [ "$(cat /sys/class/net/"$1"/address)" = "$2" ] || return 1
        ip link set "$1" address "$_old"
    }
    if vf_can_set_mac "$VFN" 02:33:00:00:00:97; then mac_before=yes; else mac_before=no; fi
    ip netns add podg
    ip -j -d link show "$PF" | jq -S . >/tmp/pf0
    snap /tmp/g0
    bad=""
    i=0
    while [ $i -lt 10 ]; do
        cni ADD ctrc$i net1 /run/netns/podg /tmp/cgu.json || bad="$bad ADD$i($(jq -r .msg /tmp/cni.out 2>/dev/null | cut -c1-80))"
        cni DEL ctrc$i net1 /run/netns/podg /tmp/cgu.json || bad="$bad DEL$i($(jq -r .msg /tmp/cni.out 2>/dev/null | cut -c1-80))"
        i=$((i + 1))
    done
    ip -j -d link show "$PF" | jq -S . >/tmp/pf1
    snap /tmp/g1
    if [ -z "$bad" ]; then
        same_snap regress.ten-cycles-pf "ip -j -d link show $PF identical after 10 ADD/DEL (VF MAC $(vf_json 0 | jq -r .address))" /tmp/pf0 /tmp/pf1
        same_snap regress.ten-cycles-all "all links, cache and leases identical after 10 ADD/DEL" /tmp/g0 /tmp/g1
    else
        fail regress.ten-cycles-pf "failed calls:$bad"
        ip link set "$PF" vf 0 mac 00:00:00:00:00:00 # hand cleanup so the next scenarios start clean
        for c in "$CACHE_DIR"/ctrc*; do [ -e "$c" ] && cni DEL "$(basename "${c%-net1}")" net1 /run/netns/podg /tmp/cgu.json; done
    fi
    # igb makes a written-back MAC admin-set; a VF with an admin MAC cannot change its own.
    if vf_can_set_mac "$VFN" 02:33:00:00:00:98; then
        pass regress.vf-mac-free "after the cycles $VFN can still set its own MAC (it could before: $mac_before)"
    else
        fail regress.vf-mac-free "$VFN cannot change its own MAC after the cycles (before: $mac_before; PF reports $(vf_json 0 | jq -r .address))"
    fi
    ip netns del podg
fi

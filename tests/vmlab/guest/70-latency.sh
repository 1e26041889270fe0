# ADD and DEL latency on a real VF (50 iterations, host-local IPAM, vlan + spoofchk: the
# common production config; MAC handling is checked in 30-cni/50-regressions), measured
# in the guest around the exec of /usr/bin/sriov; the exec overhead of a trivial static
# binary is measured the same way and reported, not subtracted.
if need_bin latency.add sriov; then
    VF=$(vf_bdf 2)
    mkconf "$VF" '"vlan":55,"spoofchk":"off",' >/tmp/cl.json
    ip netns add podl
    : >/tmp/ovh
    i=0
    while [ $i -lt 20 ]; do
        stamp; a=$NOW
        /bin/busybox true
        stamp; echo $((NOW - a)) >>/tmp/ovh
        i=$((i + 1))
    done
    : >/tmp/add
    : >/tmp/del
    bad=""
    i=0
    while [ $i -lt 50 ]; do
        stamp; a=$NOW
        cni ADD ctrl net1 /run/netns/podl /tmp/cl.json || bad="$bad ADD$i"
        stamp; b=$NOW
        cni DEL ctrl net1 /run/netns/podl /tmp/cl.json || bad="$bad DEL$i"
        stamp
        echo $((b - a)) >>/tmp/add
        echo $((NOW - b)) >>/tmp/del
        i=$((i + 1))
    done
    ms() { awk '{printf "%.1f\n", $1 / 1000}'; }
    add50=$(p50 </tmp/add | ms)
    del50=$(p50 </tmp/del | ms)
    ovh50=$(p50 </tmp/ovh | ms)
    metric cni_add_p50_ms "$add50"
    metric cni_del_p50_ms "$del50"
    metric cni_add_max_ms "$(sort -n /tmp/add | tail -n 1 | ms)"
    metric cni_del_max_ms "$(sort -n /tmp/del | tail -n 1 | ms)"
    metric exec_overhead_p50_ms "$ovh50"
    if [ -z "$bad" ]; then
        pass latency.add-del "50 ADD/DEL on $VF: ADD p50 ${add50} ms, DEL p50 ${del50} ms (exec of busybox true: ${ovh50} ms; $ACCEL_NOTE)"
    else
        fail latency.add-del "failed calls:$bad; last: $(cni_says 1)"
    fi
    ip netns del podl
fi

# Shared helpers for the guest scenario (busybox sh). Sourced by run.sh.
# One check = one line "PASS name: what was seen" or "FAIL name: what went wrong".
OUT=/mnt/share/out
RES=$OUT/results
MET=$OUT/metrics
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

# busybox sh runs its own applets before a PATH lookup: call iproute2 by absolute path.
ip() { /usr/sbin/ip "$@"; }
rdma() { /usr/sbin/rdma "$@"; }
devlink() { /usr/sbin/devlink "$@"; }

oneline() { tr '\n' ' ' | sed 's/  */ /g' | cut -c1-400; }
pass() { echo "PASS $1: $2" | tee -a "$RES"; }
fail() { echo "FAIL $1: $2" | tee -a "$RES"; }
# check NAME DESCRIPTION CMD...: passes when CMD exits 0; a failure records CMD's output.
check() {
    _n=$1 _d=$2
    shift 2
    if _o=$("$@" 2>&1); then
        pass "$_n" "$_d"
    else
        fail "$_n" "$_d: $(echo "$_o" | tail -n 5 | oneline)"
    fi
}
# expect_eq NAME DESCRIPTION EXPECTED ACTUAL
expect_eq() {
    if [ "$3" = "$4" ]; then pass "$1" "$2 ($4)"; else fail "$1" "$2: expected '$3', got '$4'"; fi
}
metric() { echo "$1 $2" | tee -a "$MET"; }

# Wall clock in microseconds: busybox date has no %N here, adjtimex prints tv_usec.
# stamp sets NOW with one fork+exec (parsed with builtins); now_us prints it.
stamp() {
    _o=$(adjtimex)
    _s=${_o#*tv_sec:}
    _s=${_s%%time.tv_usec*}
    _u=${_o#*tv_usec:}
    _u=${_u%%return*}
    NOW=$((_s * 1000000 + _u))
}
now_us() {
    stamp
    echo "$NOW"
}
# Guest uptime in centiseconds, without a fork (for deadlines).
uptime_cs() {
    read -r _up _idle </proc/uptime
    _up=${_up%.*}${_up#*.}
    echo "${_up#0}"
}

# wait_for SECONDS CMD...: poll CMD (20 ms steps) until it succeeds or the deadline passes.
wait_for() {
    _deadline=$(($(uptime_cs) + $1 * 100))
    shift
    while ! "$@" >/dev/null 2>&1; do
        [ "$(uptime_cs)" -ge "$_deadline" ] && return 1
        usleep 20000
    done
}

loadmods() { # group: insmod the closure computed on the host, in load order
    while read -r _m; do
        _b=$(basename "$_m" .ko | tr - _)
        grep -q "^$_b " /proc/modules && continue
        insmod "$_m" || echo "insmod $_m failed"
    done </lib/vmlab/mods-"$1"
}

# p50 of the numbers on stdin
p50() { sort -n | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]}'; }

# ---- CNI helpers
CACHE_DIR=/var/lib/cni/sriov
IPAM_DIR=/run/cni-ipam
# cni CMD CONTAINERID IFNAME NETNS CONFFILE: runs /usr/bin/sriov; stdout in /tmp/cni.out,
# stderr in /tmp/cni.err, returns its exit code.
cni() {
    CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_IFNAME=$3 CNI_NETNS=$4 CNI_PATH=/opt/cni/bin \
        /usr/bin/sriov <"$5" >/tmp/cni.out 2>/tmp/cni.err
}
cni_says() { echo "rc $1, stdout $(cut -c1-300 /tmp/cni.out | oneline), stderr $(tail -n 3 /tmp/cni.err | oneline)"; }
# mkconf DEVICEID 'EXTRA-FIELDS,' [SUBNET]: a network config for sriov with host-local IPAM
mkconf() {
    cat <<EOC
{"cniVersion":"1.0.0","name":"vmlab","type":"sriov","deviceID":"$1",$2
 "ipam":{"type":"host-local","subnet":"${3:-198.18.0.0/24}","dataDir":"$IPAM_DIR"}}
EOC
}
# with_prev CONF RESULT: CONF with prevResult (as a runtime sends CHECK/DEL)
with_prev() { jq -c --slurpfile r "$2" '. + {prevResult: $r[0]}' "$1"; }
# snap FILE: everything ADD may touch and DEL must restore: every link of the init netns
# (ip -j -d: names, MACs, flags, mtu, the PF's vfinfo_list), cache entries (lock files stay
# by design), IPAM leases, RDMA devices. Left out: "permaddr". igbvf_reset() copies the
# MAC the PF assigned into the netdev's perm_addr whenever the VF comes up with an admin
# MAC; no netlink request can write perm_addr back, so no CNI can restore it.
snap() {
    {
        ip -j -d link show | jq 'map(del(.permaddr))'
        echo "cache:"
        ls "$CACHE_DIR" 2>/dev/null | grep -v '^lock$'
        echo "leases:"
        ls "$IPAM_DIR"/* 2>/dev/null | grep -E '/[0-9a-f.:]+$'
        echo "rdma:"
        rdma -j link show 2>/dev/null
    } >"$1"
}
# same_snap NAME DESC A B: pass when snapshots A and B are identical, else show the diff
same_snap() {
    if cmp -s "$3" "$4"; then
        pass "$1" "$2"
    else
        fail "$1" "$2: differs: $(diff "$3" "$4" | grep '^[-+][^-+]' | head -n 12 | oneline)"
    fi
}
vf_json() { ip -j -d link show "$PF" | jq -c --argjson n "$1" '.[0].vfinfo_list[] | select(.vf == $n)'; }
netns_links() { ip -n "$1" -j link show | jq -r '[.[].ifname] | join(",")'; }

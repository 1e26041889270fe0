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
now_us() { adjtimex | awk '/tv_sec/ {s = $2} /tv_usec/ {u = $2} END {printf "%.0f\n", s * 1000000 + u}'; }
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

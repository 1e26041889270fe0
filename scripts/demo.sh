#!/usr/bin/env bash
# A pod's whole life on a simulated ConnectX node, each party played by the project's real
# binaries (run as root: it creates network namespaces):
#
#   the node          simhost writes a dual-port ConnectX-6 Dx host tree (2 PFs x 8 VFs,
#                     RDMA devices); each VF netdev is a veth in a network namespace this
#                     script creates and removes (this kernel has no SR-IOV)
#   device plugin     the real device-plugin daemon on that tree (embedded default config:
#                     rdma/hca shared, rdma/vhca = one VF each)
#   kubelet           the kubelet simulator (demo-kubelet): registration, device lists,
#                     GetPreferredAllocation + Allocate, pod-resources, pod deletion
#   multus            this script: the pod's network annotation, the NAD's resourceName,
#                     the VF from pod-resources and the device-info file, deviceID
#   sriov CNI         `sriov-test` (sriov + the VF fake): ADD, CHECK, DEL twice, with Debian's
#                     host-local IPAM
#   DRA               the same daemon with --dra: ResourceSlices to the resource.k8s.io/v1
#                     API server stand-in (dra-apiserver), a claim for one VF prepared and
#                     unprepared by the kubelet's DRA calls (demo-dra), slices deleted at stop
#
# DEMO_HOST=infiniband runs the same life on a simulated InfiniBand node (ConnectX-6,
# 2 PFs x 4 VFs, link type 32, IPoIB netdevs): the NAD is `ib-sriov` with the GUID from
# the pod's network annotation, and the fake PF's IB model shows the VF's node and port
# GUIDs set (then the VF rebound) on ADD, restored (and rebound) on DEL.
#
# Nothing outside the namespaces and the temp dir it creates is touched; a trap removes
# them (and stops the daemon and the kubelet simulator) also when a step fails.
set -Eeuo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
if [ "$(id -u)" != 0 ]; then
    echo "demo.sh: run as root (the pod's network is real: network namespaces, veths)" >&2
    exit 1
fi
if [ -e /etc/pcidp/config.json ]; then
    # the daemon would read it instead of the embedded default this demo is written for
    echo "demo.sh: this machine has /etc/pcidp/config.json; the demo shows the embedded default config" >&2
    exit 1
fi
case ${DEMO_HOST:=cx6dx} in
    cx6dx) ib=0 ;;
    infiniband) ib=1 ;;
    *)
        echo "demo.sh: DEMO_HOST=$DEMO_HOST: cx6dx (default) or infiniband" >&2
        exit 1
        ;;
esac
./scripts/deps.sh test # + iproute2, Debian's CNI plugins (host-local)
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== building (release)"
cargo build --release -q -p device-plugin -p simhost -p node-tests \
    --bin device-plugin --bin simhost --bin demo-kubelet --bin demo-dra --bin dra-apiserver
# sriov-test: sriov with the VF fake (never shipped); `test-fake` is sriov-cni's own feature
cargo build --release -q -p sriov-cni --features test-fake --bin sriov-test
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
[ "${bin#/}" != "$bin" ] || bin=$PWD/$bin
cni_path=/usr/lib/cni # Debian's containernetworking-plugins

started=$(date +%s%N)
work=$(mktemp -d /tmp/rdma-hca-demo.XXXXXX)
nodens=demo-$$-node # the node's network namespace (where its VF netdevs are)
podns=demo-$$-pod   # the pod sandbox's network namespace
daemon= kube_pid= api_pid= made_ns=()
cleanup() {
    local rc=$?
    set +e
    trap - ERR
    [ -n "$kube_pid" ] && kill "$kube_pid" 2>/dev/null && wait "$kube_pid" 2>/dev/null
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null
    # deleting a netns destroys the veths in it (and their peers)
    for ns in "${made_ns[@]}"; do
        [ -e "/run/netns/$ns" ] && ip netns del "$ns"
    done
    rm -rf "$work"
    if [ "$rc" != 0 ]; then
        printf '\n\033[1;31m== demo FAILED (exit %s); everything it created is removed\033[0m\n' "$rc" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'printf "\033[1;31mFAILED at line %s: %s\033[0m\n" "$LINENO" "$BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '%s\n' "$*"; }
fail() {
    printf '\033[1;31mFAILED: %s\033[0m\n' "$*" >&2
    exit 1
}
ok() { printf '\033[32mok\033[0m  %s\n' "$*"; }
indent() { sed 's/^/    /'; }
# the node's links but the VF stand-ins' peers: name, state, MAC
show_links() {
    ip -n "$nodens" -br link show | awk '$1 !~ /^peer-/ {sub(/@.*/, "", $1); printf "    %-10s %-8s %s\n", $1, $2, $3}'
}
# one CNI result per line, broken at its top-level keys
show_result() { sed 's/,"\(interfaces\|ips\|routes\|dns\)"/,\n    "\1"/g; s/^/    /'; }

if [ "$ib" = 1 ]; then
    step "1. [node] a simulated InfiniBand ConnectX-6 node at $work/host (link type 32, IPoIB netdevs, /dev/infiniband)"
else
    step "1. [node] a simulated ConnectX-6 Dx node at $work/host (sysfs, /dev/infiniband, /proc/net/route)"
fi
"$bin/simhost" "$DEMO_HOST" "$work/host"

step "2. [device plugin] device-plugin discover --root $work/host   (embedded default config: rdma/hca + rdma/vhca)"
"$bin/device-plugin" discover --root "$work/host"

step "3. [kubelet + device plugin] the daemon registers with the kubelet simulator (device-plugin dir $work/dp)"
mkdir -p "$work/dp" "$work/devinfo/dp" "$work/devinfo/cni" "$work/pod-resources" \
    "$work/ipam" "$work/cni-data"
podres=$work/pod-resources/kubelet.sock
coproc KUBE { exec "$bin/demo-kubelet" serve --dir "$work/dp" --pod-resources "$podres" \
    --timeout 20 2> "$work/kubelet.log"; }
kube_pid=$KUBE_PID
kube_in=${KUBE[1]} kube_out=${KUBE[0]}
# The kubelet simulator's answer to the last command (its start banner at first):
# printed, and a failure if it reports an error.
kube_answer() {
    local line
    while IFS= read -r -t 60 -u "$kube_out" line; do
        case $line in
            ==ok) return 0 ;;
            '==error '*) fail "kubelet: ${line#==error }" ;;
            *) printf '%s\n' "$line" ;;
        esac
    done
    fail "kubelet simulator: no answer ($(cat "$work/kubelet.log"))"
}
kube() {
    printf '%s\n' "$*" >&"$kube_in"
    kube_answer
}
kube_answer
# The same daemon is also a DRA driver (--dra): it publishes this node's ResourceSlices to
# an API server (here the resource.k8s.io/v1 stand-in, dra-apiserver, on 127.0.0.1) and
# serves the kubelet's DRA calls. The stand-in holds one ResourceClaim, allocated as the
# scheduler would: the node's last VF, with our opaque VfConfig (VLAN 100) for the CNI.
driver=sriov.rdma-hca.io node=demo-node
dravf=$(basename "$(dirname "$(ls -d "$work"/host/sys/bus/pci/devices/*/physfn | tail -1)")")
dradev=pci-$(printf '%s' "$dravf" | tr ':.' '--')
claim_uid=7d3c2a9e-0b1f-4c55-9a7e-3f1d2c4b5a60
vfconfig='{"driver": "'$driver'", "parameters": {"apiVersion": "'$driver'/v1alpha1", "kind": "VfConfig", "vlan": 100, "spoofChk": true}}'
cat > "$work/claim.json" <<EOF
{"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
 "metadata": {"namespace": "default", "name": "vf-claim", "uid": "$claim_uid"},
 "spec": {"devices": {
   "requests": [{"name": "vf", "exactly": {"deviceClassName": "vf.$driver"}}],
   "config": [{"requests": ["vf"], "opaque": $vfconfig}]}},
 "status": {"allocation": {"devices": {
   "results": [{"request": "vf", "driver": "$driver", "pool": "$node", "device": "$dradev"}],
   "config": [{"source": "FromClaim", "requests": ["vf"], "opaque": $vfconfig}]}}}}
EOF
"$bin/dra-apiserver" --kubeconfig "$work/kubeconfig" --claim "default/vf-claim=$work/claim.json" \
    > "$work/apiserver.out" 2>&1 &
api_pid=$!
"$bin/demo-kubelet" wait-for "$work/kubeconfig" --timeout 10 > /dev/null \
    || fail "dra-apiserver did not start: $(cat "$work/apiserver.out")"
# the daemon retries Register until kubelet.sock is there, so the start order does not
# matter; its device-info GC asks pod-resources which VFs pods still hold (every second
# here, and a new file is kept a second at least)
"$bin/device-plugin" --root "$work/host" --device-plugin-path "$work/dp" \
    --device-info-dir "$work/devinfo/dp" --pod-resources-socket "$podres" \
    --device-info-gc-interval 1 --device-info-gc-grace 1 \
    --dra --node-name "$node" --kubeconfig "$work/kubeconfig" --cdi-dir "$work/cdi" \
    --dra-plugin-dir "$work/plugins/$driver" --dra-registry-dir "$work/plugins_registry" \
    --dra-device-info-dir "$work/devinfo/dra" \
    --log-level info 2> "$work/daemon.log" &
daemon=$!
kube register rdma/hca,rdma/vhca

step "4. [node] the VF netdevs: veths in the node's network namespace $nodens"
if [ "$ib" = 1 ]; then
    say "This kernel has no SR-IOV and no IPoIB: each VF netdev of the simulated tree is a"
    say "veth (its own MAC: a veth cannot take a 20-byte IPoIB address) in a namespace the"
    say "demo owns; its peer stays up beside it. The machine's own network namespace is not"
    say "touched."
else
    say "This kernel has no SR-IOV: each VF netdev of the simulated tree is a veth (with the"
    say "tree's MAC) in a namespace the demo owns; its peer stays up beside it. The machine's"
    say "own network namespace is not touched."
fi
ip netns add "$nodens" && made_ns=("$nodens" "${made_ns[@]}")
ip -n "$nodens" link set lo up
for fn in "$work"/host/sys/bus/pci/devices/*/physfn; do
    vfdir=$(dirname "$fn")
    for net in "$vfdir"/net/*; do
        dev=$(basename "$net")
        if [ "$ib" = 1 ]; then
            # a veth cannot take a 20-byte IPoIB address: the kernel picks its MAC
            ip -n "$nodens" link add "$dev" type veth peer name "peer-$dev"
        else
            ip -n "$nodens" link add "$dev" address "$(cat "$net/address")" type veth peer name "peer-$dev"
        fi
        ip -n "$nodens" link set "peer-$dev" up
    done
done
show_links
node_links_before=$(ip -n "$nodens" -br link show)
nvfs=$(ls -d "$work"/host/sys/bus/pci/devices/*/physfn | wc -l)
if [ "$ib" = 1 ]; then
    # What a PF's VF table reports before any pod: each VF's node and port GUID (here the
    # last 8 bytes of its IPoIB address). The fake PF starts from these.
    {
        printf '{"ib_vfs": {'
        sep=
        for fn in "$work"/host/sys/bus/pci/devices/*/physfn; do
            vfdir=$(readlink -f "$(dirname "$fn")")
            pfdir=$(readlink -f "$fn")
            for l in "$pfdir"/virtfn*; do
                [ "$(readlink -f "$l")" = "$vfdir" ] && idx=${l##*/virtfn}
            done
            g=$(printf '%d' "0x$(cut -d: -f13-20 "$(ls -d "$vfdir"/net/*)/address" | tr -d :)")
            printf '%s"%s/%s": {"node": %s, "port": %s, "bound_node": %s, "bound_port": %s, "binds": 0}' \
                "$sep" "$(ls "$pfdir/net")" "$idx" "$g" "$g" "$g" "$g"
            sep=,
        done
        printf '}}\n'
    } > "$work/fake-vf.json"
fi

step "5. [kubelet + device plugin] a pod asking for rdma/hca: 1 and one VF is admitted"
if [ "$ib" = 1 ]; then
    # ib-kubernetes would write the GUID into the pod's network annotation
    networks='[{"name": "ib-sriov-net", "interface": "net1", "infiniband-guid": "02:00:00:00:00:00:0a:01"}]'
else
    networks='[{"name": "sriov-vhca", "interface": "net1"}]'
fi
cat > "$work/pod.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: rdma-vf-pod
  namespace: default
  annotations:
    k8s.v1.cni.cncf.io/networks: '$networks'
spec:
  containers:
    - name: app
      image: docker.io/library/busybox:1.36
      resources:
        limits:
          rdma/hca: 1
          rdma/vhca: 1
EOF
indent < "$work/pod.yaml"
pod_ns=$(sed -n 's/^  namespace: *//p' "$work/pod.yaml")
pod_name=$(sed -n 's/^  name: *//p' "$work/pod.yaml")
container=$(sed -n 's/^    - name: *//p' "$work/pod.yaml")
# the limits with a '/' are device-plugin resources
mapfile -t limits < <(awk '/limits:/ {f = 1; next} f && $1 ~ /\// {sub(":", "", $1); print $1 ":" $2}' "$work/pod.yaml")
say
say "kubelet: GetPreferredAllocation + Allocate for each of ${limits[*]} (container $container):"
kube admit "$pod_ns/$pod_name" "$container" "${limits[@]}"
say
say "device plugin: device-info files (Network Plumbing WG device-info 1.1.0) in $work/devinfo/dp:"
for f in "$work"/devinfo/dp/*; do
    [ -e "$f" ] && { say "    $(basename "$f")"; say "      $(cat "$f")"; }
done

step "6. [container runtime] the pod's sandbox: network namespace $podns"
ip netns add "$podns" && made_ns=("$podns" "${made_ns[@]}")
ip -n "$podns" link set lo up
sandbox=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n') # CNI_CONTAINERID
say "sandbox (CNI_CONTAINERID) $sandbox"
ip -n "$podns" -br addr show | indent

step "7. [multus] which network, which VF"
annotation=$(sed -n "s/^ *k8s.v1.cni.cncf.io\/networks: *'\(.*\)'$/\1/p" "$work/pod.yaml")
say "pod annotation k8s.v1.cni.cncf.io/networks: $annotation"
[ "$(grep -o '"name"' <<< "$annotation" | wc -l)" = 1 ] || fail "this multus stand-in takes one network"
net=$(sed 's/.*"name": *"\([^"]*\)".*/\1/' <<< "$annotation")
ibguid=$(sed -n 's/.*"infiniband-guid": *"\([^"]*\)".*/\1/p' <<< "$annotation")
ifname=$(sed -n 's/.*"interface": *"\([^"]*\)".*/\1/p' <<< "$annotation")
ifname=${ifname:-net1}
say "-> network $net as $ifname; its NetworkAttachmentDefinition:"
if [ "$ib" = 1 ]; then
    cat > "$work/nad.yaml" <<'EOF'
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: ib-sriov-net
  namespace: default
  annotations:
    k8s.v1.cni.cncf.io/resourceName: rdma/vhca
spec:
  config: |
    {
      "cniVersion": "1.0.0",
      "name": "ib-sriov-net",
      "type": "ib-sriov",
      "link_state": "enable",
      "capabilities": {"infinibandGUID": true},
      "ipam": {
        "type": "host-local",
        "subnet": "10.56.217.0/24",
        "rangeStart": "10.56.217.100",
        "rangeEnd": "10.56.217.199",
        "routes": [{"dst": "10.56.0.0/16"}],
        "gateway": "10.56.217.1"
      }
    }
EOF
else
    cat > "$work/nad.yaml" <<'EOF'
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: sriov-vhca
  namespace: default
  annotations:
    k8s.v1.cni.cncf.io/resourceName: rdma/vhca
spec:
  config: |
    {
      "cniVersion": "1.0.0",
      "name": "sriov-vhca",
      "type": "sriov",
      "vlan": 100,
      "max_tx_rate": 10000,
      "spoofchk": "on",
      "ipam": {
        "type": "host-local",
        "subnet": "10.56.217.0/24",
        "rangeStart": "10.56.217.100",
        "rangeEnd": "10.56.217.199",
        "routes": [{"dst": "10.56.0.0/16"}],
        "gateway": "10.56.217.1"
      }
    }
EOF
fi
indent < "$work/nad.yaml"
[ "$(sed -n 's/^  name: *//p' "$work/nad.yaml")" = "$net" ] || fail "no NetworkAttachmentDefinition $net"
resource=$(sed -n 's/^ *k8s.v1.cni.cncf.io\/resourceName: *//p' "$work/nad.yaml")
say "(in deploy/networks.yaml the same kind of network names intel.com/mlnx_sriov_rdma, a pool"
say " of deploy/configmap.yaml; the daemon's embedded default config calls its VF pool rdma/vhca)"
say
say "resourceName $resource: which $resource device did kubelet give $pod_ns/$pod_name? pod-resources List on $podres:"
"$bin/demo-kubelet" pod-resources --socket "$podres" --pod "$pod_ns/$pod_name" > "$work/podres.txt"
indent < "$work/podres.txt"
mapfile -t vfs < <(awk -v r="$resource" '$3 == r {print $4}' "$work/podres.txt" | sort -u)
[ "${#vfs[@]}" = 1 ] || fail "pod-resources lists ${#vfs[@]} $resource devices for $pod_name, not 1"
vf=${vfs[0]}
dpinfo=$work/devinfo/dp/${resource//\//-}-$vf-device.json
say "-> VF $vf; the device plugin's device-info file $(basename "$dpinfo"):"
[ -e "$dpinfo" ] || fail "no device-info file $dpinfo"
indent < "$dpinfo"
echo
grep -q "\"pci-address\":\"$vf\"" "$dpinfo" || fail "$dpinfo does not name $vf"
cniinfo=$work/devinfo/cni/$net-$sandbox-$ifname-device.json
cp "$dpinfo" "$cniinfo"
say "multus keeps a copy for the CNI: devinfo/cni/$(basename "$cniinfo")"
vfdev=$(basename "$(ls -d "$work/host/sys/bus/pci/devices/$vf/net/"*)")
if [ "$ib" = 1 ]; then
    vfmac=$(ip -n "$nodens" link show "$vfdev" | awk '/link\/ether/ {print $2}') # the veth's
else
    vfmac=$(cat "$work/host/sys/bus/pci/devices/$vf/net/$vfdev/address")
fi
# The delegate config: the NAD's config with deviceID injected. The demo also keeps
# host-local's leases in its temp dir (ipam.dataDir) instead of /var/lib/cni/networks.
awk '/config: \|/ {f = 1; next} f {sub(/^    /, ""); print}' "$work/nad.yaml" |
    sed "1s|^{|{\n  \"deviceID\": \"$vf\",|; s|\"type\": \"host-local\",|\"type\": \"host-local\", \"dataDir\": \"$work/ipam\",|" \
        > "$work/net1.conf"
if [ -n "$ibguid" ]; then
    # multus turns the annotation's infiniband-guid into runtimeConfig for a plugin whose
    # config declares the infinibandGUID capability
    sed -i "1s|^{|{\n  \"runtimeConfig\": {\"infinibandGUID\": \"$ibguid\"},|" "$work/net1.conf"
fi
say "delegate config for sriov (deviceID and runtimeConfig injected; ipam.dataDir is the demo's):"
indent < "$work/net1.conf"

# Execs sriov-test (the sriov plugin plus the VF fake) as a runtime on the node would: in
# the node's network namespace, config on stdin. Result on stdout ($work/cni.out), log on stderr.
# SRIOV_CNI_FAKE_VF_STATE keeps the VF settings a PF would take in a file: only the test
# binary sriov-test (feature test-fake) reads it; the shipped sriov refuses ADD with it.
cni() {
    local rc=0
    nsenter --net="/run/netns/$nodens" -- env -i PATH="$PATH" \
        CNI_COMMAND="$1" CNI_CONTAINERID="$sandbox" CNI_NETNS="/run/netns/$podns" \
        CNI_IFNAME="$ifname" CNI_PATH="$cni_path" \
        SRIOV_CNI_SYSFS_ROOT="$work/host" SRIOV_CNI_DATA_DIR="$work/cni-data" \
        SRIOV_CNI_FAKE_VF_STATE="$work/fake-vf.json" \
        "$bin/sriov-test" < "$2" > "$work/cni.out" 2> "$work/cni.err" || rc=$?
    sed 's/^/    sriov log: /' "$work/cni.err"
    return $rc
}
vf_state() { # the fake PF's view of VF $1 ("<pf netdev>/<vf index>"), one line
    tr -d ' \n' < "$work/fake-vf.json" | grep -o "\"$1\":{[^}]*}" || echo "$1: defaults"
}
# an IB VF's GUIDs in the fake PF: PF table node/port, the driver's (bound) node/port, binds
ib_guids() {
    python3 - "$work/fake-vf.json" "$1" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))["ib_vfs"][sys.argv[2]]
g = lambda n: ":".join(f"{n:016x}"[i:i + 2] for i in range(0, 16, 2))
print(f"node {g(v['node'])} port {g(v['port'])} | driver node {g(v['bound_node'])} port {g(v['bound_port'])} | binds {v['binds']}")
PY
}

step "8. [sriov CNI] ADD $ifname: $bin/sriov-test in $nodens, CNI_NETNS=/run/netns/$podns"
say "(VF settings go to SRIOV_CNI_FAKE_VF_STATE=$work/fake-vf.json: this kernel has no"
say " SR-IOV; links, addresses and routes are real)"
if [ "$ib" = 1 ]; then
    pf0=$(basename "$(readlink -f "$work/host/sys/bus/pci/devices/$vf/physfn")")
    for l in "$work/host/sys/bus/pci/devices/$pf0"/virtfn*; do
        [ "$(basename "$(readlink -f "$l")")" = "$vf" ] && ibkey=$(ls "$work/host/sys/bus/pci/devices/$pf0/net")/${l##*/virtfn}
    done
    ib_before=$(ib_guids "$ibkey")
    say "the VF's GUIDs before ADD ($ibkey): $ib_before"
fi
cni ADD "$work/net1.conf" || fail "sriov ADD: $(cat "$work/cni.out")"
result=$(cat "$work/cni.out")
say "result:"
show_result <<< "$result"
say "in the pod ($podns):"
ip -n "$podns" addr show "$ifname" | indent
ip -n "$podns" route show | indent
say "on the node ($nodens): $vfdev is gone"
show_links
pf=$(basename "$(readlink -f "$work/host/sys/bus/pci/devices/$vf/physfn")")
pfdev=$(ls "$work/host/sys/bus/pci/devices/$pf/net")
vfidx=
for l in "$work/host/sys/bus/pci/devices/$pf"/virtfn*; do
    [ "$(basename "$(readlink -f "$l")")" = "$vf" ] && vfidx=${l##*/virtfn}
done
[ -n "$vfidx" ] || fail "$vf is not a VF of $pf"
say "the VF on its PF ($pfdev VF $vfidx), as the fake PF holds it:"
vf_state "$pfdev/$vfidx" | indent
ip -n "$nodens" link show "$vfdev" > /dev/null 2>&1 && fail "$vfdev is still on the node"
grep -q "link/ether $vfmac" < <(ip -n "$podns" link show "$ifname") || fail "$ifname in the pod does not have $vfdev's MAC $vfmac"
addr=$(ip -n "$podns" -4 -o addr show "$ifname" | awk '{print $4}')
case $addr in 10.56.217.1[0-9][0-9]/24) ;; *) fail "$ifname address '$addr' not in 10.56.217.100-199" ;; esac
grep -q "\"address\":\"$addr\"" <<< "$result" || fail "result does not report $addr"
if [ "$ib" = 1 ]; then
    ib_after=$(ib_guids "$pfdev/$vfidx")
    say "the VF's GUIDs after ADD: $ib_after"
    want=$(tr -d : <<< "$ibguid")
    want=${want:0:2}:${want:2:2}:${want:4:2}:${want:6:2}:${want:8:2}:${want:10:2}:${want:12:2}:${want:14:2}
    [ "$ib_after" = "node $want port $want | driver node $want port $want | binds 1" ] ||
        fail "GUIDs after ADD: $ib_after (want $ibguid in the PF table and the driver, one rebind)"
    vf_state "$pfdev/$vfidx" | grep -q '"link_state":"enable"' || fail "link_state enable not set on $pfdev VF $vfidx"
    ok "$vfdev ($vf) is $ifname in the pod with $addr; node and port GUID $ibguid set on $pfdev VF $vfidx, VF rebound, link state enable"
else
    vf_state "$pfdev/$vfidx" | grep -q '"vlan":100' || fail "VLAN 100 not set on $pfdev VF $vfidx"
    ok "$vfdev ($vf, MAC $vfmac) is $ifname in the pod with $addr; VLAN 100 and 10 Gbit/s cap on $pfdev VF $vfidx"
fi

step "9. [sriov CNI] CHECK $ifname (the config with prevResult = ADD's result)"
{ printf '{\n  "prevResult": %s,\n' "$result"; tail -n +2 "$work/net1.conf"; } > "$work/net1.check.conf"
cni CHECK "$work/net1.check.conf" || fail "sriov CHECK: $(cat "$work/cni.out")"
ok "CHECK: the pod's $ifname and the VF's settings are as ADD left them"

step "10. [multus + sriov CNI] the pod is deleted: DEL $ifname, twice (multus may repeat it)"
for round in 1 2; do
    cni DEL "$work/net1.conf" || fail "sriov DEL #$round: $(cat "$work/cni.out")"
    ok "DEL #$round"
done
rm "$cniinfo"
say "multus removes its device-info copy; the runtime removes the sandbox netns $podns"
ip netns del "$podns"
say "on the node ($nodens): $vfdev is back"
show_links
say "the VF on its PF:"
vf_state "$pfdev/$vfidx" | indent
grep -q "link/ether $vfmac" < <(ip -n "$nodens" link show "$vfdev") || fail "$vfdev is not back with MAC $vfmac"
[ "$(ip -n "$nodens" -br link show)" = "$node_links_before" ] || fail "the node's links differ from before the pod"
ok "$vfdev back on the node under its own name, with its MAC; the node's links as before the pod"
if [ "$ib" = 1 ]; then
    ib_del=$(ib_guids "$pfdev/$vfidx")
    say "the VF's GUIDs after DEL: $ib_del"
    [ "${ib_del% | binds *}" = "${ib_before% | binds *}" ] || fail "GUIDs after DEL: $ib_del, before ADD: $ib_before"
    [ "${ib_del##* | binds }" = 2 ] || fail "DEL did not rebind the VF once: $ib_del"
    ok "VF $vfidx of $pfdev: node and port GUIDs restored to ${ib_before%% |*}, VF rebound"
else
    vf_state "$pfdev/$vfidx" | grep -q '"vlan":0' || fail "VLAN still set on $pfdev VF $vfidx"
    ok "VF $vfidx of $pfdev back to VLAN 0, no rate cap"
fi
left=$(find "$work/cni-data" -type f ! -path '*/lock/*' | wc -l)
[ "$left" = 0 ] || fail "sriov cache left: $(find "$work/cni-data" -type f)"
ok "sriov cache ($work/cni-data) empty"
leases=$(find "$work/ipam" -type f ! -name lock ! -name 'last_reserved_ip*' | wc -l)
[ "$leases" = 0 ] || fail "host-local leases left: $(find "$work/ipam" -type f)"
ok "host-local lease of $addr released"

step "11. [kubelet + device plugin] kubelet forgets the pod; the VF is free again"
kube delete "$pod_ns/$pod_name"
say "pod-resources List:"
"$bin/demo-kubelet" pod-resources --socket "$podres" | indent
say "device plugin: kubelet never tells a plugin a pod is gone; the daemon's device-info GC"
say "asks pod-resources which VFs pods still hold and removes the files of the others:"
"$bin/demo-kubelet" wait-removed "$dpinfo" --timeout 10 | indent || fail "$dpinfo still there"
kube free rdma/vhca
kube free rdma/hca
say "a new pod can take all $nvfs VFs, $vf among them:"
kube admit default/next-pod app "rdma/vhca:$nvfs" > "$work/next-pod.txt"
grep -E '^[0-9]+ x|Allocate' "$work/next-pod.txt" | indent
grep -q "Allocate.*$vf" "$work/next-pod.txt" || fail "$vf was not allocated again"
kube delete default/next-pod > /dev/null

step "12. [DRA] the same daemon as a DRA driver ($driver): slices, a claim prepared and unprepared"
say "ResourceSlices of node $node in the API server (dra-apiserver, $(head -1 "$work/apiserver.out")):"
"$bin/demo-dra" slices --kubeconfig "$work/kubeconfig" --node "$node" --driver "$driver" \
    --expect "$dradev" > "$work/slices.txt" || fail "slices: $(cat "$work/slices.txt")"
indent < "$work/slices.txt"
grep -q "^1 slices, $nvfs devices" "$work/slices.txt" || fail "expected 1 slice of $nvfs devices"
ok "the $nvfs VFs offered in one slice; $dradev (VF $dravf) among them"
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon/status")
say "daemon RSS, both interfaces on (device plugin + DRA): $((rss / 1024)).$(( (rss % 1024) * 10 / 1024 )) MiB"
reg=$work/plugins_registry/$driver-reg.sock
say "kubelet: its plugin watcher dials $reg (GetInfo), then NodePrepareResources for claim default/vf-claim:"
"$bin/demo-dra" prepare --registration "$reg" --claim "default/vf-claim/$claim_uid" > "$work/prepare.txt" \
    || fail "prepare: $(cat "$work/prepare.txt")"
indent < "$work/prepare.txt"
grep -q "device $dradev -> CDI $driver/vf=" "$work/prepare.txt" || fail "no CDI device for $dradev"
cdispec=$work/cdi/$driver-$claim_uid.json
say "the CDI spec the container runtime reads ($cdispec):"
python3 -m json.tool "$cdispec" | indent
grep -q "PCIDEVICE_[A-Z_]*=$dravf" "$cdispec" || fail "no PCIDEVICE_* env for $dravf in the CDI spec"
ok "CDI spec with the PCIDEVICE_* env of $dravf, as the device plugin's Allocate gives"
drainfo=$(ls "$work"/devinfo/dra/*"$claim_uid"*)
say "the device-info file for the CNI ($drainfo):"
python3 -m json.tool "$drainfo" | indent
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); c=d["dra"]["config"]; assert c["vlan"]==100 and c["spoofChk"] is True, c' "$drainfo" \
    || fail "the claim's VfConfig is not in $drainfo"
ok "the claim's VfConfig (VLAN 100, spoofchk on) carried to the CNI's device-info file"
"$bin/demo-dra" prepare --registration "$reg" --claim "default/vf-claim/$claim_uid" > "$work/prepare2.txt"
cmp -s "$work/prepare.txt" "$work/prepare2.txt" || fail "a second prepare answered differently"
ok "prepared again (a kubelet retry): the same answer"
"$bin/demo-dra" unprepare --registration "$reg" --claim "default/vf-claim/$claim_uid" | indent
[ ! -e "$cdispec" ] && [ ! -e "$drainfo" ] || fail "unprepare left $(ls "$work/cdi" "$work/devinfo/dra")"
ok "unprepared: CDI spec and device-info file removed"
say "the daemon stops (SIGTERM): no claim is prepared, so it deletes this node's slices"
kill -TERM "$daemon"
wait "$daemon" || fail "the daemon exited with $?"
daemon=
"$bin/demo-dra" slices --kubeconfig "$work/kubeconfig" --node "$node" --driver "$driver" > "$work/slices.txt"
indent < "$work/slices.txt"
grep -q '^0 slices' "$work/slices.txt" || fail "slices left after a clean stop"
ok "no slices of node $node left"
kill -TERM "$api_pid"
wait "$api_pid" || fail "dra-apiserver exited with $?"
api_pid=
say "every request the API server saw:"
grep -E '^(GET|POST|PUT|DELETE) ' "$work/apiserver.out" | indent

step "13. [device plugin] what the daemon logged"
cat "$work/daemon.log"

elapsed=$(( ($(date +%s%N) - started) / 1000000 ))
printf '\n\033[1m== the pod lived and died in %d.%03d s after the build; removing %s, %s and %s\033[0m\n' \
    $((elapsed / 1000)) $((elapsed % 1000)) "$nodens" "$podns" "$work"

# Guest scenario driver: infra first (loads drivers, makes 4 VFs), then each scenario
# file in order. VMLAB_ONLY (host) limits the scenarios; infra always runs.
. /mnt/share/guest/lib.sh
ONLY=$(cat /mnt/share/only 2>/dev/null)
T_START=$(now_us)
ACCEL_NOTE="guest on QEMU $(cat /mnt/share/accel 2>/dev/null)"
. /mnt/share/guest/00-infra.sh
for s in /mnt/share/guest/[1-9]*.sh; do
    [ -e "$s" ] || continue
    name=$(basename "$s" .sh)
    name=${name#*-}
    if [ -n "$ONLY" ] && ! echo " $ONLY " | grep -q " $name "; then continue; fi
    echo "=== scenario $name at $(cut -d' ' -f1 /proc/uptime)s"
    t_s=$(uptime_cs)
    . "$s"
    metric "scenario_${name}_s" "$(( ($(uptime_cs) - t_s) / 100 ))"
done
metric guest_wall_s "$(awk -v a="$T_START" -v b="$(now_us)" 'BEGIN {printf "%.1f", (b - a) / 1e6}')"

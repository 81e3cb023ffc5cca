#!/usr/bin/env bash
# Bitmap benchmark: what carrying persistent bitmaps costs. A 4 GiB top with ~512 MiB of data
# in scattered extents over a 4 GiB base; the base has bitmap `bb`, the top (and, for merge,
# the middle layer) bitmap `tb`. Times, on identical fresh copies, rotating who goes first,
# RUNS times each, with a final sync inside every timing:
#   commit: imgchain commit (bitmaps carried) | imgchain commit of the same chain without
#           bitmaps | qemu-img commit (QEMU marks the base's bitmaps itself)
#   merge:  imgchain merge MID | oVirt's cold merge: qemu-img commit -d MID, qemu-img bitmap
#           --add/--merge of MID's bitmap into the base, qemu-img rebase -u TOP, rm MID
# and prints the medians and the ratios.
#
#   bash bench/bitmaps.sh [WORKDIR]     (RUNS=3 by default; needs ~4 GiB free in WORKDIR)
#   IMGCHAIN=path uses that binary instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
work=${1:-$(mktemp -d /tmp/imgchain-bench-bitmaps.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work/src" "$work/plain" "$work/run"' EXIT
if [ -z "${IMGCHAIN:-}" ]; then cargo build --release --quiet; fi
bin=${IMGCHAIN:-$PWD/target/release/imgchain}

now() { date +%s.%N; }
settle() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches; sleep 1; }

# base <- mid <- top in $1; with $2 = yes, bitmaps in base and mid and top.
build() {
    local d=$1 bitmaps=$2
    rm -rf "$d"; mkdir -p "$d"
    qemu-img create -q -f qcow2 "$d/base.qcow2" 4G
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$d/mid.qcow2" 4G
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$d/top.qcow2" 4G
    if [ "$bitmaps" = yes ]; then
        qemu-img bitmap --add "$d/base.qcow2" bb
        qemu-img bitmap --add "$d/mid.qcow2" tb
        qemu-img bitmap --add "$d/top.qcow2" tb
    fi
    qemu-io -c 'write -P 0x11 0 256M' "$d/base.qcow2" >/dev/null
    local cmds=() i
    for i in $(seq 0 255); do
        cmds+=(-c "write -P $((i % 250 + 1)) $((i * 15 * 1048576 + (i % 7) * 65536)) 2M")
    done
    qemu-io "${cmds[@]}" "$d/mid.qcow2" >/dev/null
    qemu-io -c 'write -P 0x33 1G 4M' "$d/top.qcow2" >/dev/null
}

# Seconds to run "$@" (in $work/run, a fresh copy of $1) and sync.
time_in() {
    local src=$1; shift
    rm -rf "$work/run"; cp -a "$src" "$work/run"; settle
    local t0; t0=$(now)
    (cd "$work/run" && "$@" >/dev/null); sync
    python3 -c "print($(now) - $t0)"
}

ovirt_merge() {
    qemu-img commit -q -d mid.qcow2
    qemu-img bitmap --add base.qcow2 tb
    qemu-img bitmap --merge tb -b mid.qcow2 -F qcow2 base.qcow2 tb
    qemu-img rebase -u -b base.qcow2 -F qcow2 top.qcow2
    rm mid.qcow2
}

build "$work/src" yes
build "$work/plain" no
declare -A t
names=(ours_bitmaps ours_plain qemu_commit ours_merge ovirt_merge)
for r in $(seq 1 "$RUNS"); do
    # Rotate who goes first.
    for k in $(seq 0 4); do
        n=${names[$(( (k + r) % 5 ))]}
        case $n in
            ours_bitmaps) s=$(time_in "$work/src" "$bin" commit mid.qcow2) ;;
            ours_plain) s=$(time_in "$work/plain" "$bin" commit mid.qcow2) ;;
            qemu_commit) s=$(time_in "$work/src" qemu-img commit -q mid.qcow2) ;;
            ours_merge) s=$(time_in "$work/src" "$bin" merge --yes mid.qcow2) ;;
            ovirt_merge) s=$(time_in "$work/src" ovirt_merge) ;;
        esac
        t[$n]="${t[$n]:-} $s"
    done
done
median() { python3 -c "import statistics,sys; print(round(statistics.median(map(float, sys.argv[1:])), 3))" $1; }
declare -A m
for n in "${names[@]}"; do m[$n]=$(median "${t[$n]}"); echo "$n: ${t[$n]} -> median ${m[$n]} s"; done
ratio() { python3 -c "print(round($1 / $2, 2))"; }
echo "commit: bitmaps carried ${m[ours_bitmaps]} s, plain ${m[ours_plain]} s ($(ratio "${m[ours_bitmaps]}" "${m[ours_plain]}")x plain), qemu-img ${m[qemu_commit]} s ($(ratio "${m[qemu_commit]}" "${m[ours_bitmaps]}")x ours)"
echo "merge: imgchain ${m[ours_merge]} s, oVirt's qemu-img sequence ${m[ovirt_merge]} s ($(ratio "${m[ovirt_merge]}" "${m[ours_merge]}")x ours)"

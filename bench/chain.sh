#!/usr/bin/env bash
# Merge and flatten benchmark: base (4 GiB, 256 MiB of data) <- mid (~512 MiB in extents of
# mixed sizes) <- {top, vm2, vm3}. Times, on identical fresh copies, alternating which goes
# first, RUNS times each, with a final sync inside every timing:
#   merge:   imgchain merge mid.qcow2   vs  qemu-img commit -d mid + rebase -u of each overlay + rm
#   flatten: imgchain flatten top.qcow2 vs  qemu-img rebase -b "" top.qcow2
# and prints the median times and the ratios.
#
#   bash bench/chain.sh [WORKDIR]     (RUNS=3 by default; needs ~6 GiB free in WORKDIR)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
work=${1:-$(mktemp -d /tmp/imgchain-bench-chain.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work/src" "$work/a" "$work/b"' EXIT

cargo build --release --quiet
bin=$PWD/target/release/imgchain

src=$work/src
rm -rf "$src"; mkdir -p "$src"
qemu-img create -q -f qcow2 "$src/base.qcow2" 4G
qemu-io -c 'write -P 0x11 0 256M' "$src/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$src/mid.qcow2" 4G
cmds=(); off=0; i=0; total=0
sizes=(4096 65536 524288 1048576 2097152 16777216 12288 8388608 131072 3145728)
while [ "$total" -lt $((512 * 1024 * 1024)) ]; do
    len=${sizes[$((i % ${#sizes[@]}))]}
    if [ $((i % 11)) -eq 5 ]; then cmds+=(-c "write -z $off $len"); else cmds+=(-c "write -P $((i % 250 + 1)) $off $len"); fi
    total=$((total + len))
    off=$(( (off + len + 7 * 1048576 + (i % 5) * 4096) % (4096 * 1048576 - 16777216) / 4096 * 4096 ))
    i=$((i + 1))
done
qemu-io "${cmds[@]}" "$src/mid.qcow2" >/dev/null
for o in top vm2 vm3; do
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$src/$o.qcow2" 4G
    qemu-io -c "write -P 0x77 $(( RANDOM % 64 ))M 16M" "$src/$o.qcow2" >/dev/null
done
echo "mid: $i extents, $(du -h "$src/mid.qcow2" | cut -f1) on disk; base $(du -h "$src/base.qcow2" | cut -f1)"

now() { date +%s.%N; }
settle() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches; sleep 1; }
fresh() { for who in a b; do rm -rf "$work/$who"; mkdir -p "$work/$who"; cp --sparse=always "$src"/*.qcow2 "$work/$who/"; done; sync; }
timed() { local t0; t0=$(now); "$@" >/dev/null; sync; python3 -c "print($(now) - $t0)"; }
qemu_merge() {
    cd "$work/b"
    qemu-img commit -q -d mid.qcow2
    for o in top vm2 vm3; do qemu-img rebase -u -F qcow2 -b base.qcow2 $o.qcow2; done
    rm mid.qcow2
}
qemu_flatten() { cd "$work/b" && qemu-img rebase -q -b "" top.qcow2; }

declare -A t
for op in merge flatten; do
    ours=(); theirs=()
    for r in $(seq 1 "$RUNS"); do
        fresh
        case $op in
            merge) a=("$bin" merge "$work/a/mid.qcow2"); b=(qemu_merge) ;;
            flatten) a=("$bin" flatten "$work/a/top.qcow2"); b=(qemu_flatten) ;;
        esac
        if [ $((r % 2)) -eq 1 ]; then
            settle; ours+=("$(timed "${a[@]}")"); settle; theirs+=("$(timed "${b[@]}")")
        else
            settle; theirs+=("$(timed "${b[@]}")"); settle; ours+=("$(timed "${a[@]}")")
        fi
        for img in top vm2 vm3; do
            qemu-img compare -q "$work/a/$img.qcow2" "$work/b/$img.qcow2" || { echo "$op: $img differs!"; exit 1; }
        done
        echo "$op run $r: imgchain ${ours[-1]} s, qemu-img ${theirs[-1]} s"
    done
    median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    t[$op]="$(median "${ours[@]}") $(median "${theirs[@]}")"
done
for op in merge flatten; do
    read -r o q <<<"${t[$op]}"
    python3 -c "o,q=$o,$q; print(f'$op median: imgchain {o:.3f} s, qemu-img {q:.3f} s, ratio imgchain/qemu-img {q/o:.2f}x')"
done

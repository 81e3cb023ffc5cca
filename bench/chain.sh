#!/usr/bin/env bash
# Merge, flatten and rebase benchmark: base (4 GiB, 256 MiB of data) <- mid (~512 MiB in
# extents of mixed sizes) <- {top, vm2, vm3}. Times, on identical fresh copies, rotating
# which goes first, RUNS times each, with a final sync inside every timing:
#   merge:   imgchain merge mid.qcow2      vs  qemu-img commit -d mid + rebase -u of each overlay + rm
#   flatten: imgchain flatten top.qcow2    vs  qemu-img rebase -b "" top.qcow2
#   rebase:  imgchain rebase -b base top   vs  qemu-img rebase -b base.qcow2 -F qcow2 top.qcow2
# and prints the median times and the ratios, on the work directory's filesystem and, as root
# with mkfs.xfs, on a loop-mounted XFS (where the copy clones). BASELINE=/path/to/imgchain also
# times another build in the same runs, to compare two versions.
#
#   bash bench/chain.sh [WORKDIR]     (RUNS=3 by default; needs ~6 GiB free in WORKDIR; XFS=0
#                                      skips the XFS run)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
work=${1:-$(mktemp -d /tmp/imgchain-bench-chain.XXXXXX)}
mkdir -p "$work"
mnt=
cleanup() {
    rm -rf "$work/src" "$work/a" "$work/b" "$work/c"
    if [ -n "$mnt" ]; then umount "$mnt" 2>/dev/null || true; rmdir "$mnt"; rm -f "$work/xfs.img"; fi
}
trap cleanup EXIT

cargo build --release --quiet
bin=$PWD/target/release/imgchain
base_bin=${BASELINE:-}

build() {
    local src=$1
    rm -rf "$src"; mkdir -p "$src"
    qemu-img create -q -f qcow2 "$src/base.qcow2" 4G
    qemu-io -c 'write -P 0x11 0 256M' "$src/base.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$src/mid.qcow2" 4G
    local cmds=() off=0 i=0 total=0 len
    local sizes=(4096 65536 524288 1048576 2097152 16777216 12288 8388608 131072 3145728)
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
        qemu-io -c "write -P 0x77 $(( (i * 7 + ${#o}) % 64 ))M 16M" "$src/$o.qcow2" >/dev/null
    done
    echo "mid: $i extents, $(du -h "$src/mid.qcow2" | cut -f1) on disk; base $(du -h "$src/base.qcow2" | cut -f1)"
}

now() { date +%s.%N; }
settle() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches; sleep 1; }
timed() { local t0; t0=$(now); "$@" >/dev/null; sync; python3 -c "print($(now) - $t0)"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
qemu_merge() {
    cd "$1"
    qemu-img commit -q -d mid.qcow2
    for o in top vm2 vm3; do qemu-img rebase -u -F qcow2 -b base.qcow2 $o.qcow2; done
    rm mid.qcow2
}
qemu_flatten() { cd "$1" && qemu-img rebase -q -b "" top.qcow2; }
qemu_rebase() { cd "$1" && qemu-img rebase -q -b base.qcow2 -F qcow2 top.qcow2; }
ours() {
    local b=$1 op=$2 d=$3
    case $op in
        # Builds that ask before a merge deletes take --yes; older ones (a baseline) do not.
        merge) if "$b" merge --help | grep -q -- --yes; then
                   "$b" merge --yes "$d/mid.qcow2"
               else
                   "$b" merge "$d/mid.qcow2"
               fi ;;
        flatten) "$b" flatten "$d/top.qcow2" ;;
        rebase) "$b" rebase -b base.qcow2 "$d/top.qcow2" ;;
    esac
}

# The three operations on `dir`'s filesystem, labelled `label`.
bench() {
    local dir=$1 label=$2 src=$1/src
    echo "== $label"
    build "$src"
    local who=(a b) ; [ -n "$base_bin" ] && who+=(c)
    local op r results=()
    for op in merge flatten rebase; do
        local -a t_a=() t_b=() t_c=()
        for r in $(seq 1 "$RUNS"); do
            for w in "${who[@]}"; do rm -rf "${dir:?}/$w"; mkdir -p "$dir/$w"; cp --sparse=always --reflink=never "$src"/*.qcow2 "$dir/$w/"; done
            sync
            # Who goes first changes every run: the first timing after the copies pays for
            # the filesystem's background work on them.
            local order=(a b c)
            case $((r % 3)) in 2) order=(b c a) ;; 0) order=(c a b) ;; esac
            for w in "${order[@]}"; do
                case $w in
                    a) settle; t_a+=("$(timed ours "$bin" "$op" "$dir/a")") ;;
                    b) settle; t_b+=("$(timed "qemu_$op" "$dir/b")") ;;
                    c) [ -n "$base_bin" ] && { settle; t_c+=("$(timed ours "$base_bin" "$op" "$dir/c")"); } ;;
                esac
            done
            for img in top vm2 vm3; do
                [ -e "$dir/a/$img.qcow2" ] || continue
                qemu-img compare -q "$dir/a/$img.qcow2" "$dir/b/$img.qcow2" || { echo "$op: $img differs!"; exit 1; }
            done
            qemu-img check -q "$dir/a/top.qcow2" || { echo "$op: top.qcow2 is not clean"; exit 1; }
            echo "$op run $r: imgchain ${t_a[-1]} s, qemu-img ${t_b[-1]} s${base_bin:+, baseline ${t_c[-1]:-} s}"
        done
        results+=("$op $(median "${t_a[@]}") $(median "${t_b[@]}") $([ -n "$base_bin" ] && median "${t_c[@]}" || echo 0)")
    done
    for line in "${results[@]}"; do
        read -r op o q c <<<"$line"
        python3 -c "o,q,c=$o,$q,$c; print(f'$label: $op median: imgchain {o:.3f} s, qemu-img {q:.3f} s, ratio imgchain/qemu-img {q/o:.2f}x' + (f', baseline {c:.3f} s ({c/o:.2f}x of this build)' if c else ''))"
    done
    rm -rf "${dir:?}/a" "$dir/b" "$dir/c" "$src"
}

bench "$work" "$(df -T "$work" | awk 'NR==2 {print $2}')"

if [ "${XFS:-1}" = 0 ]; then
    echo "xfs: skipped (XFS=0)"
elif [ "$(id -u)" = 0 ] && command -v mkfs.xfs >/dev/null; then
    truncate -s 16G "$work/xfs.img"
    mkfs.xfs -q -f -m reflink=1 "$work/xfs.img"
    mnt=$(mktemp -d /tmp/imgchain-bench-xfs.XXXXXX)
    if mount -o loop "$work/xfs.img" "$mnt"; then
        bench "$mnt" "xfs (loop)"
    else
        echo "xfs: cannot loop-mount; not measured"
    fi
else
    echo "xfs: needs root and mkfs.xfs; not measured"
fi

#!/usr/bin/env bash
# Commit benchmark: a 4 GiB top with ~1 GiB of data in extents of mixed sizes over a 4 GiB
# qcow2 base. Times `imgchain commit -d` and `qemu-img commit -d` on identical fresh copies,
# rotating which goes first, RUNS times each, with a final sync inside every timing, and
# `dd` of the same number of bytes with fsync as the disk's ceiling. Prints the times, the
# CPU time (user+sys) of each tool, the syncs each issues and the longest wait in one, and
# the ratios.
#
# It runs on WORKDIR's file system, then (as root, with mkfs.xfs) on a loop-mounted XFS,
# where imgchain clones the data (reflinks) instead of copying it.
#
#   bash bench/commit.sh [WORKDIR]     (RUNS=3 by default; needs ~8 GiB free in WORKDIR)
#   IMGCHAIN=path uses that binary instead of building; KERNEL_COPY=true copies in the kernel,
#   IN_FLIGHT=N keeps N reads under way (copy.in_flight), WRITE_BEHIND=0 leaves all writeback
#   to the final sync (copy.write_behind); XFS=0 skips the XFS run; BASELINE=/path/to/imgchain
#   also times another build in the same runs, to compare two versions
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
work=${1:-$(mktemp -d /tmp/imgchain-bench-commit.XXXXXX)}
mkdir -p "$work"
mnt=
cleanup() {
    rm -rf "$work/src" "$work/a" "$work/b" "$work/c" "$work/dd.out" "$work/config.toml"
    if [ -n "$mnt" ]; then umount "$mnt" 2>/dev/null || true; rm -rf "$mnt" "$work/xfs.img"; fi
}
trap cleanup EXIT

if [ -z "${IMGCHAIN:-}" ]; then cargo build --release --quiet; fi
bin=${IMGCHAIN:-$PWD/target/release/imgchain}
base_bin=${BASELINE:-}
printf '[copy]\nkernel_copy = %s\nin_flight = %s\nwrite_behind = "%s"\n' "${KERNEL_COPY:-false}" \
    "${IN_FLIGHT:-4}" "${WRITE_BEHIND:-8MiB}" >"$work/config.toml"

now() { date +%s.%N; }
# Wall, user and sys seconds of a command and the sync after it.
timed() { /usr/bin/time -f '%U %S' -o "$work/cpu" "$@" >/dev/null; sync; cat "$work/cpu"; }

# The chain in $1/src.
build() {
    local src=$1/src
    rm -rf "$src"; mkdir -p "$src"
    qemu-img create -q -f qcow2 "$src/base.qcow2" 4G
    qemu-io -c 'write -P 0x11 0 256M' "$src/base.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$src/top.qcow2" 4G
    # ~1 GiB in extents from 4 KiB to 16 MiB, spread over the disk, some of them zero writes.
    local cmds=() off=0 i=0 total=0 len
    local sizes=(4096 65536 524288 1048576 2097152 16777216 12288 8388608 131072 3145728)
    while [ "$total" -lt $((1024 * 1024 * 1024)) ]; do
        len=${sizes[$((i % ${#sizes[@]}))]}
        if [ $((i % 11)) -eq 5 ]; then
            cmds+=(-c "write -z $off $len")
        else
            cmds+=(-c "write -P $((i % 250 + 1)) $off $len")
        fi
        total=$((total + len))
        off=$(( (off + len + 7 * 1048576 + (i % 5) * 4096) % (4096 * 1048576 - 16777216) ))
        off=$(( off / 4096 * 4096 ))
        i=$((i + 1))
    done
    qemu-io "${cmds[@]}" "$src/top.qcow2" >/dev/null
    echo "$i"
}

# The whole comparison in directory $1, labelled $2.
bench() {
    local dir=$1 label=$2 extents
    extents=$(build "$dir")
    local src=$dir/src alloc
    alloc=$(qemu-img map --output=json "$src/top.qcow2" | python3 -c '
import json,sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"]==0 and (e["data"] or e["zero"])))')
    echo "== $label: top: $extents extents, $alloc bytes allocated ($(du -h "$src/top.qcow2" | cut -f1) on disk)"
    local ours=() theirs=() ocpu=() tcpu=() base=()
    settle() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches; sleep 1; }
    run_ours() {
        local t0 c; t0=$(now)
        c=$(timed "$bin" --config "$work/config.toml" commit -d "$dir/a/top.qcow2")
        ours+=("$(python3 -c "print($(now) - $t0)")"); ocpu+=("$(echo "$c" | awk '{print $1 + $2}')")
    }
    run_theirs() {
        local t0 c; t0=$(now)
        c=$(cd "$dir/b" && timed qemu-img commit -q -d top.qcow2)
        theirs+=("$(python3 -c "print($(now) - $t0)")"); tcpu+=("$(echo "$c" | awk '{print $1 + $2}')")
    }
    run_base() {
        local t0; t0=$(now)
        timed "$base_bin" --config "$work/config.toml" commit -d "$dir/c/top.qcow2" >/dev/null
        base+=("$(python3 -c "print($(now) - $t0)")")
    }
    local copies=(a b)
    if [ -n "$base_bin" ]; then copies+=(c); fi
    for r in $(seq 1 "$RUNS"); do
        for who in "${copies[@]}"; do
            rm -rf "$dir/$who"; mkdir -p "$dir/$who"
            cp --sparse=always --reflink=never "$src/base.qcow2" "$src/top.qcow2" "$dir/$who/"
        done
        # Each timed run starts with no dirty pages left by the copies or the other tool, and
        # (as root) with a cold page cache. Who goes first changes every run: the first timing
        # after the copies pays for the filesystem's background work on them.
        local order=(ours theirs base)
        case $((r % 3)) in 2) order=(theirs base ours) ;; 0) order=(base ours theirs) ;; esac
        for who in "${order[@]}"; do
            [ "$who" = base ] && [ -z "$base_bin" ] && continue
            settle; "run_$who"
        done
        qemu-img compare -q "$dir/a/base.qcow2" "$dir/b/base.qcow2" || { echo "bases differ!"; exit 1; }
        local also=""
        if [ -n "$base_bin" ]; then
            qemu-img compare -q "$dir/c/base.qcow2" "$dir/b/base.qcow2" || { echo "baseline's base differs!"; exit 1; }
            also=", baseline ${base[-1]} s"
        fi
        echo "run $r: imgchain ${ours[-1]} s (cpu ${ocpu[-1]} s), qemu-img ${theirs[-1]} s (cpu ${tcpu[-1]} s)$also"
    done
    if command -v strace >/dev/null; then
        local so st
        so=$(syncs "$dir/a" "$bin" --config "$work/config.toml" commit -d top.qcow2)
        st=$(syncs "$dir/b" qemu-img commit -q -d top.qcow2)
        echo "syncs: imgchain $so, qemu-img $st"
    fi
    local t0 dd_s
    t0=$(now)
    dd if=/dev/zero of="$dir/dd.out" bs=2M count=$((alloc / 2097152)) conv=fsync status=none
    dd_s=$(python3 -c "print($(now) - $t0)")
    rm -f "$dir/dd.out"
    median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    python3 - "$alloc" "$(median "${ours[@]}")" "$(median "${theirs[@]}")" "$dd_s" \
        "$(median "${ocpu[@]}")" "$(median "${tcpu[@]}")" <<'PY'
import sys
b, o, t, d, oc, tc = int(sys.argv[1]), *map(float, sys.argv[2:])
mib = b / 2**20
print(f"median: imgchain {o:.3f} s ({mib/o:.0f} MiB/s, cpu {oc:.2f} s), qemu-img {t:.3f} s ({mib/t:.0f} MiB/s, cpu {tc:.2f} s), dd {d:.3f} s ({mib/d:.0f} MiB/s)")
print(f"ratio imgchain/qemu-img: {t/o:.2f}x faster; imgchain/dd: {d/o:.2f}x; qemu-img/dd: {d/t:.2f}x")
PY
    if [ -n "$base_bin" ]; then
        python3 - "$(median "${ours[@]}")" "$(median "${base[@]}")" "$(median "${theirs[@]}")" <<'PY'
import sys
o, b, t = map(float, sys.argv[1:])
print(f"baseline median {b:.3f} s: qemu-img/baseline {t/b:.2f}x (this build {t/o:.2f}x); baseline/this build {b/o:.2f}x")
PY
    fi
    rm -rf "$dir/a" "$dir/b" "$dir/c" "$src"
}

# Successful syncs a command issues (one untimed run under strace, on a fresh copy).
syncs() {
    local dir=$1; shift
    rm -rf "$dir"; mkdir -p "$dir"
    cp --sparse=always --reflink=never "$(dirname "$dir")/src/base.qcow2" "$(dirname "$dir")/src/top.qcow2" "$dir/"
    (cd "$dir" && strace -f -qq -T -e trace=fsync,fdatasync,syncfs,sync -o "$dir/strace.log" "$@" >/dev/null)
    # How many, and the longest wait in one (the final sync: the pause after 100%).
    echo "$(grep -c '= 0' "$dir/strace.log") (longest $(grep -o '<[0-9.]*>' "$dir/strace.log" | tr -d '<>' | sort -g | tail -1) s)"
}

bench "$work" "$(df -T "$work" | awk 'NR==2 {print $2}') ($work)"

if [ "${XFS:-1}" = 0 ]; then
    echo "xfs: skipped (XFS=0)"
elif [ "$(id -u)" = 0 ] && command -v mkfs.xfs >/dev/null; then
    truncate -s 12G "$work/xfs.img"
    mkfs.xfs -q -f -m reflink=1 "$work/xfs.img"
    mnt=$(mktemp -d /tmp/imgchain-bench-xfs.XXXXXX)
    if mount -o loop "$work/xfs.img" "$mnt"; then
        bench "$mnt" "xfs, loop-mounted ($mnt)"
    else
        echo "xfs: cannot loop-mount; not measured"
    fi
else
    echo "xfs: needs root and mkfs.xfs; not measured"
fi

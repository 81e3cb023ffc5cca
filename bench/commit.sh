#!/usr/bin/env bash
# Commit benchmark: a 4 GiB top with ~1 GiB of data in extents of mixed sizes over a 4 GiB
# qcow2 base. Times `imgchain commit -d` and `qemu-img commit -d` on identical fresh copies,
# alternating which goes first, RUNS times each, and `dd` of the same number of bytes with
# fsync as the disk's ceiling. Prints the times and the throughput ratios.
#
#   bash bench/commit.sh [WORKDIR]     (RUNS=3 by default; needs ~8 GiB free in WORKDIR)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
work=${1:-$(mktemp -d /tmp/imgchain-bench-commit.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work/src" "$work/a" "$work/b" "$work/dd.out"' EXIT

cargo build --release --quiet
bin=$PWD/target/release/imgchain

src=$work/src
rm -rf "$src"; mkdir -p "$src"
qemu-img create -q -f qcow2 "$src/base.qcow2" 4G
qemu-io -c 'write -P 0x11 0 256M' "$src/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$src/top.qcow2" 4G
# ~1 GiB in extents from 4 KiB to 16 MiB, spread over the disk, some of them zero writes.
cmds=()
off=0
i=0
total=0
sizes=(4096 65536 524288 1048576 2097152 16777216 12288 8388608 131072 3145728)
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
alloc=$(qemu-img map --output=json "$src/top.qcow2" | python3 -c '
import json,sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"]==0 and (e["data"] or e["zero"])))')
echo "top: $i extents, $alloc bytes allocated ($(du -h "$src/top.qcow2" | cut -f1) on disk)"

now() { date +%s.%N; }
ours=(); theirs=()
for r in $(seq 1 "$RUNS"); do
    for who in a b; do
        rm -rf "$work/$who"; mkdir -p "$work/$who"
        cp --sparse=always "$src/base.qcow2" "$src/top.qcow2" "$work/$who/"
    done
    sync
    run_ours() { local t0; t0=$(now); "$bin" commit -d "$work/a/top.qcow2" >/dev/null; ours+=("$(python3 -c "print($(now) - $t0)")"); }
    run_theirs() { local t0; t0=$(now); (cd "$work/b" && qemu-img commit -q -d top.qcow2); theirs+=("$(python3 -c "print($(now) - $t0)")"); }
    # Each timed run starts with no dirty pages left by the copies or the other tool, and
    # (as root) with a cold page cache.
    settle() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches; sleep 1; }
    if [ $((r % 2)) -eq 1 ]; then settle; run_ours; settle; run_theirs; else settle; run_theirs; settle; run_ours; fi
    qemu-img compare -q "$work/a/base.qcow2" "$work/b/base.qcow2" || { echo "bases differ!"; exit 1; }
    echo "run $r: imgchain ${ours[-1]} s, qemu-img ${theirs[-1]} s"
done

# Syncs each tool issues for this commit (one untimed run each, under strace).
syncs_per_gib() {
    local dir=$1; shift
    rm -rf "$dir"; mkdir -p "$dir"
    cp --sparse=always "$src/base.qcow2" "$src/top.qcow2" "$dir/"
    (cd "$dir" && strace -f -qq -e trace=fsync,fdatasync,syncfs,sync -o "$dir/strace.log" "$@" >/dev/null)
    python3 -c "import sys; n=sum(1 for l in open(sys.argv[1]) if '= 0' in l); print(n, f'{n / (int(sys.argv[2]) / 2**30):.1f}')" "$dir/strace.log" "$alloc"
}
if command -v strace >/dev/null; then
    read -r so sog < <(syncs_per_gib "$work/a" "$bin" commit -d top.qcow2)
    read -r st stg < <(syncs_per_gib "$work/b" qemu-img commit -q -d top.qcow2)
    echo "syncs: imgchain $so ($sog per GiB committed), qemu-img $st ($stg per GiB)"
else
    echo "syncs: not counted (install strace)"
fi

t0=$(now)
dd if=/dev/zero of="$work/dd.out" bs=2M count=$((alloc / 2097152)) conv=fsync status=none
dd_s=$(python3 -c "print($(now) - $t0)")

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(median "${ours[@]}"); mt=$(median "${theirs[@]}")
python3 - "$alloc" "$mo" "$mt" "$dd_s" <<'PY'
import sys
b, o, t, d = int(sys.argv[1]), *map(float, sys.argv[2:])
mib = b / 2**20
print(f"median: imgchain {o:.3f} s ({mib/o:.0f} MiB/s), qemu-img {t:.3f} s ({mib/t:.0f} MiB/s), dd {d:.3f} s ({mib/d:.0f} MiB/s)")
print(f"throughput ratio imgchain/qemu-img: {t/o:.2f}x; imgchain/dd: {d/o:.2f}x; qemu-img/dd: {d/t:.2f}x")
PY

#!/usr/bin/env bash
# Live commit benchmark: a 4 GiB top holding 1 GiB of data over an empty 4 GiB base, committed
#   offline: imgchain commit -d top.qcow2                    (nobody holds it)
#   live:    imgchain commit --live top.qcow2                (a qemu-storage-daemon holds it)
#   loaded:  the same, while the guest writes through the daemon's NBD export
#   libvirt: imgchain commit --live top.qcow2 on a libvirt TCG domain (through virsh), when a
#            system libvirtd answers
# on fresh copies, with a final sync inside every timing. Prints the times and ratios.
#
#   bash bench/live.sh [WORKDIR]     (IMGCHAIN=path uses that binary instead of building)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/imgchain-bench-live.XXXXXX)}
mkdir -p "$work"
pids=()
domain=imgchain-bench-$$
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    virsh -q -c qemu:///system destroy "$domain" >/dev/null 2>&1 || true
    rm -rf "$work/src" "$work/run"
}
trap cleanup EXIT
if [ -z "${IMGCHAIN:-}" ]; then cargo build --release --quiet; fi
bin=${IMGCHAIN:-$PWD/target/release/imgchain}

src=$work/src
rm -rf "$src"; mkdir -p "$src"
qemu-img create -q -f qcow2 "$src/base.qcow2" 4G
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$src/top.qcow2" 4G
qemu-io -c 'write -P 0x11 0 1G' "$src/top.qcow2" >/dev/null

now() { date +%s.%N; }
fresh() { rm -rf "$work/run"; mkdir -p "$work/run"; cp --sparse=always "$src"/*.qcow2 "$work/run/"; sync; }
daemon() {
    local d=$work/run
    qemu-storage-daemon --blockdev "driver=file,node-name=top-file,filename=$d/top.qcow2" \
        --blockdev driver=qcow2,node-name=top,file=top-file \
        --chardev "socket,path=$d/qmp.sock,server=on,wait=off,id=m" --monitor chardev=m \
        --nbd-server "addr.type=unix,addr.path=$d/nbd.sock" \
        --export type=nbd,id=e0,node-name=top,writable=on &
    pids+=($!)
    for _ in $(seq 100); do [ -S "$d/qmp.sock" ] && [ -S "$d/nbd.sock" ] && return; sleep 0.05; done
    echo "the daemon did not start"; exit 1
}
timed() { local t0; t0=$(now); "$@" >/dev/null; sync; python3 -c "print($(now) - $t0)"; }

fresh; offline=$(timed "$bin" commit -d "$work/run/top.qcow2")
fresh; daemon; live=$(timed "$bin" commit --live "$work/run/top.qcow2"); kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
fresh; daemon
qemu-io -f raw -c 'write -P 0x22 2G 512M' "nbd+unix:///top?socket=$work/run/nbd.sock" >/dev/null &
writer=$!
loaded=$(timed "$bin" commit --live "$work/run/top.qcow2")
wait "$writer" || true
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
lv=
if command -v virsh >/dev/null && virsh -c qemu:///system version >/dev/null 2>&1; then
    fresh; chmod 755 "$work" "$work/run"
    cat >"$work/run/domain.xml" <<XML
<domain type='qemu'><name>$domain</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='$work/run/top.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>
XML
    virsh -q -c qemu:///system create "$work/run/domain.xml" >/dev/null
    lv=$(timed "$bin" commit --live "$work/run/top.qcow2")
    virsh -q -c qemu:///system destroy "$domain" >/dev/null
fi
python3 - "$offline" "$live" "$loaded" "$lv" <<'PY'
import sys
o, l, w = map(float, sys.argv[1:4])
print(f"1 GiB: offline {o:.2f} s, live {l:.2f} s ({o/l:.2f}x offline), live with 512 MiB of guest writes {w:.2f} s ({o/w:.2f}x offline)")
if sys.argv[4]:
    v = float(sys.argv[4])
    print(f"1 GiB through libvirt (virsh, TCG domain): {v:.2f} s ({o/v:.2f}x offline)")
else:
    print("libvirt: no system libvirtd answers; not measured")
PY

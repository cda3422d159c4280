#!/usr/bin/env bash
# Boot a throwaway QEMU VM with an emulated NVMe controller and run a guest script in it.
#
#   tests/qemu/vm.sh GUEST_SCRIPT OUT_DIR [FILE...]
#
# The VM runs the Debian cloud kernel (NVMe driver built in) from an initramfs holding busybox, nvme-cli,
# the kernel's NVMe over Fabrics modules in /lib/modules (insmod them), the FILEs given and GUEST_SCRIPT as
# /guest.sh. ELF binaries go to /usr/bin (stripped, with their shared
# libraries); other files to /data.
# Everything the guest script writes under /out is packed with tar, sent over the serial console as base64
# and unpacked into OUT_DIR on the host; the console log is OUT_DIR/console.log and the guest script's exit
# code OUT_DIR/guest.rc. The VM sees two NVMe controllers: serial NVFARMQEMU0001 (64 MiB namespace) as /dev/nvme0,
# /dev/nvme0n1 and /dev/ng0n1, and a throttled one (serial NVFARMSLOW0002) as /dev/nvme1.
#
# Environment: NVFARM_CACHE (default ~/.cache/nvfarm) caches the kernel; QEMU_MEM (default 512M);
# QEMU_TIMEOUT seconds (default 300); QEMU_KVM=1 uses KVM instead of software emulation; QEMU_NVME_SIZE (default 64M).
set -euo pipefail

die() { echo "vm.sh: $*" >&2; exit 2; }
[[ $# -ge 2 ]] || die "usage: vm.sh GUEST_SCRIPT OUT_DIR [FILE...]"
guest_script=$1; out_dir=$2; shift 2
[[ -f $guest_script ]] || die "guest script '$guest_script' does not exist"
for tool in qemu-system-x86_64 cpio busybox nvme dpkg-deb apt-get strip; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed: run scripts/setup.sh"
done

cache=${NVFARM_CACHE:-$HOME/.cache/nvfarm}/qemu
mkdir -p "$cache" "$out_dir"
out_dir=$(cd "$out_dir" && pwd)

# --- kernel: boot/vmlinuz and the NVMe over Fabrics modules out of the Debian cloud kernel package ----------
# The modules (nvme-fabrics, nvme-tcp: the kernel's NVMe/TCP host; configfs, nvmet, nvmet-tcp: its target) go to
# /lib/modules in the guest, for `insmod`.
kernel=$cache/vmlinuz
modules=$cache/modules
module_names=(nvme-fabrics nvme-tcp configfs nvmet nvmet-tcp)
have_modules() { for m in "${module_names[@]}"; do [[ -s $modules/$m.ko ]] || return 1; done; }
if [[ ! -s $kernel ]] || ! have_modules; then
    resolve() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
    pkg=$(resolve)
    if [[ -z $pkg ]]; then
        apt-get update -q >/dev/null 2>&1 || true
        pkg=$(resolve)
    fi
    [[ -n $pkg ]] || die "cannot resolve linux-image-cloud-amd64 (is the Debian archive reachable? try apt-get update)"
    work=$(mktemp -d)
    (cd "$work" && apt-get download -q "$pkg" >/dev/null) || die "apt-get download $pkg failed"
    dpkg-deb --fsys-tarfile "$work"/*.deb | tar -x -C "$work" --wildcards './boot/vmlinuz-*' \
        './lib/modules/*/kernel/drivers/nvme/host/nvme-fabrics.ko*' './lib/modules/*/kernel/drivers/nvme/host/nvme-tcp.ko*' \
        './lib/modules/*/kernel/drivers/nvme/target/nvmet.ko*' './lib/modules/*/kernel/drivers/nvme/target/nvmet-tcp.ko*' \
        './lib/modules/*/kernel/fs/configfs/configfs.ko*'
    mkdir -p "$modules.tmp"
    for m in "${module_names[@]}"; do
        f=$(find "$work/lib/modules" -name "$m.ko*" | head -1)
        [[ -n $f ]] || die "$pkg has no $m.ko"
        case $f in
            *.xz) xz -dc "$f" > "$modules.tmp/$m.ko" ;;
            *.zst) zstd -dqc "$f" > "$modules.tmp/$m.ko" ;;
            *) cp "$f" "$modules.tmp/$m.ko" ;;
        esac
    done
    rm -rf "$modules" && mv "$modules.tmp" "$modules"
    cp "$work"/boot/vmlinuz-* "$kernel.tmp" && mv "$kernel.tmp" "$kernel"
    rm -rf "$work"
fi

# --- initramfs --------------------------------------------------------------------------------------------
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,out,etc,lib64,usr/bin,data,lib/modules}
cp "$modules"/*.ko "$root/lib/modules/"
cp "$(command -v busybox)" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [[ -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
done
copy_with_libs() {
    local bin=$1 dest=$2
    cp "$bin" "$dest"
    # Shared libraries (and the loader) at the same paths they have on the host.
    ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
        [[ -f $lib ]] || continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}
copy_with_libs "$(command -v nvme)" "$root/usr/bin/nvme"
for f in "$@"; do
    [[ -f $f ]] || die "file '$f' does not exist"
    if [[ $(head -c4 "$f" | tr -d '\177') == ELF ]]; then
        copy_with_libs "$f" "$root/usr/bin/$(basename "$f")"
        strip "$root/usr/bin/$(basename "$f")" 2>/dev/null || true
    else
        cp "$f" "$root/data/$(basename "$f")"
    fi
done
cp "$guest_script" "$root/guest.sh"
chmod +x "$root/guest.sh"
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
export PATH=/usr/bin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# Wait for the NVMe controller to be enumerated.
i=0; while [ ! -e /dev/nvme0n1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
echo "NVFARM-GUEST-START"
sh /guest.sh > /out/guest.log 2>&1
echo $? > /out/guest.rc
echo "NVFARM-OUT-BEGIN"
tar -C /out -cf - . | base64
echo "NVFARM-OUT-END"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out_dir/initramfs.gz"

# --- disk + boot ---------------------------------------------------------------------------------------------
disk=$out_dir/nvme.img
rm -f "$disk"; truncate -s "${QEMU_NVME_SIZE:-64M}" "$disk"
# A second, slow controller (the block layer throttles it to 200 IOPS) for tests that need commands to stay in
# flight: it enumerates after the first, as /dev/nvme1.
slow=$out_dir/slow.img
rm -f "$slow"; truncate -s 32M "$slow"
accel=(-accel tcg)
# KVM only on request: on some hosts /dev/kvm exists but cannot run a guest.
if [[ ${QEMU_KVM:-0} == 1 ]]; then accel=(-accel kvm); fi
start=$(date +%s.%N)
timeout "${QEMU_TIMEOUT:-300}" qemu-system-x86_64 "${accel[@]}" -m "${QEMU_MEM:-512M}" -smp 1 \
    -nodefaults -display none -no-reboot \
    -serial "file:$out_dir/console.log" \
    -kernel "$kernel" -initrd "$out_dir/initramfs.gz" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init" \
    -drive "file=$disk,if=none,id=nvm,format=raw" \
    -device "nvme,serial=NVFARMQEMU0001,drive=nvm" \
    -drive "file=$slow,if=none,id=slow,format=raw,throttling.iops-total=200" \
    -device "nvme,serial=NVFARMSLOW0002,drive=slow" || die "qemu failed or timed out (see $out_dir/console.log)"
end=$(date +%s.%N)
printf '%s\n' "$(echo "$end - $start" | bc 2>/dev/null || echo '?')" > "$out_dir/boot-and-run.seconds"

sed -n '/NVFARM-OUT-BEGIN/,/NVFARM-OUT-END/p' "$out_dir/console.log" | sed '1d;$d' | tr -d '\r' \
    | base64 -d | tar -x -C "$out_dir" || die "no output came back from the guest (see $out_dir/console.log)"
rm -f "$out_dir/initramfs.gz" "$disk"
rc=$(cat "$out_dir/guest.rc")
echo "vm.sh: guest script exited $rc; output in $out_dir" >&2

# Runs inside the QEMU VM (see vm.sh): nvme-cli and nvme-flash side by side on QEMU's emulated controller.
# Every output lands in /out for the host-side test (flash-tools/tests/qemu.rs) to compare.
set -x
uname -r > /out/kernel
nvme version > /out/nvme-cli.version
nvme id-ctrl /dev/nvme0 -o json > /out/cli-id-ctrl.json
nvme-flash /dev/nvme0 info --json > /out/flash-id-ctrl.json; echo $? > /out/flash-id-ctrl.rc
nvme smart-log /dev/nvme0 -o json > /out/cli-smart.json
nvme-flash /dev/nvme0 log smart --json > /out/flash-smart.json; echo $? > /out/flash-smart.rc
nvme id-ns /dev/nvme0n1 -o json > /out/cli-id-ns.json
nvme-flash /dev/nvme0 id-ns --nsid 1 --json > /out/flash-id-ns.json; echo $? > /out/flash-id-ns.rc
nvme error-log /dev/nvme0 -e 1 -o json > /out/cli-error.json
nvme-flash /dev/nvme0 log error --entries 1 --json > /out/flash-error.json; echo $? > /out/flash-error.rc
nvme-flash /dev/nvme0 log fw --json > /out/flash-fw.json; echo $? > /out/flash-fw.rc
nvme-flash /dev/nvme0 log effects --json > /out/flash-effects.json; echo $? > /out/flash-effects.rc
# Drives found through the real sysfs by what survives a reset.
nvme-flash serial=NVFARMQEMU0001 info --json > /out/flash-by-serial.json; echo $? > /out/flash-by-serial.rc
nvme-flash pci=$(cat /sys/class/nvme/nvme0/address) info --json > /out/flash-by-pci.json; echo $? > /out/flash-by-pci.rc
nvme-flash list --json > /out/flash-list.json
# QEMU's controller has no Firmware Image Download: the update must fail cleanly.
nvme-flash /dev/nvme0 update /data/fw.img --json > /out/update.json 2> /out/update.err; echo $? > /out/update.rc
# I/O passthrough on the namespace (NVME_IOCTL_IO_CMD), and a controller reset that the drive survives.
nvme reset /dev/nvme0 > /out/cli-reset.out 2>&1; echo $? > /out/cli-reset.rc
nvme-flash /dev/nvme0 wait --for 20s 2> /out/cli-reset-wait.err; echo $? > /out/cli-reset-wait.rc
nvme-flash /dev/nvme0 reset 2> /out/reset.err; echo $? > /out/reset.rc
nvme-flash /dev/nvme0 wait --for 20s 2> /out/wait.err; echo $? > /out/wait.rc
nvme-flash /dev/nvme0 info --json > /out/flash-after-reset.json; echo $? > /out/flash-after-reset.rc
# I/O passthrough (NVME_IOCTL_IO_CMD) cross-checked against the block layer.
head -c 65536 /dev/urandom > /tmp/pattern
nvme-flash /dev/nvme0 write --slba 16 --data /tmp/pattern 2> /out/write.err; echo $? > /out/write.rc
nvme-flash /dev/nvme0 read --slba 16 --blocks 128 -o /tmp/back 2> /out/read.err; echo $? > /out/read.rc
cmp /tmp/pattern /tmp/back; echo $? > /out/read-back.cmp
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/nvme0n1 of=/tmp/dd bs=512 skip=16 count=128 iflag=direct 2>/dev/null
cmp /tmp/pattern /tmp/dd; echo $? > /out/dd.cmp
# The io engine's uring_cmd backend (IORING_OP_URING_CMD, SQE128/CQE32) on the generic char device, then the
# same data read through the block layer.
bench-agent io --target /dev/ng0n1 --rw write --bs 64k --iodepth 8 --size 8M --verify --json > /out/uring-cmd-write.json 2> /out/uring-cmd-write.err; echo $? > /out/uring-cmd-write.rc
bench-agent io --target /dev/ng0n1 --rw read --bs 64k --iodepth 8 --size 8M --verify --json > /out/uring-cmd-read.json 2> /out/uring-cmd-read.err; echo $? > /out/uring-cmd-read.rc
bench-agent io --target /dev/nvme0n1 --rw read --bs 64k --iodepth 8 --size 8M --verify --direct --json > /out/block-read.json 2> /out/block-read.err; echo $? > /out/block-read.rc
bench-agent io --target /dev/ng0n1 --rw randread --bs 4k --iodepth 16 --runtime 1s --size 32M --json > /out/uring-cmd-randread.json 2> /out/uring-cmd-randread.err; echo $? > /out/uring-cmd-randread.rc
# A failing completion while 31 other passthrough commands are in flight: every one is cancelled and reaped before
# the buffers go (the message says so), and the process ends instead of hanging.
# (on the throttled controller, so commands stay in flight; found by serial, as its number is the kernel's choice)
slow=; for d in /sys/class/nvme/nvme*; do [ "$(tr -d ' ' < $d/serial)" = NVFARMSLOW0002 ] && slow=$(basename $d); done
n=${slow#nvme}; i=0; while [ ! -e /dev/ng${n}n1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
bench-agent io --target /dev/ng${n}n1 --rw randread --bs 4k --iodepth 32 --runtime 5s --size 16M --inject-error-at 40 > /out/uring-cmd-inject.out 2> /out/uring-cmd-inject.err; echo $? > /out/uring-cmd-inject.rc
# The rest of the NVM command set: nvme-cli on LBAs 4096.., nvme-flash on LBAs 8192.. of the same namespace,
# the same operations; then the two ranges must hold the same bytes and every command the same outcome.
head -c 4096 /dev/urandom > /tmp/p8
head -c 4096 /dev/urandom > /tmp/other
for lba in 4096 8192; do dd if=/tmp/p8 of=/dev/nvme0n1 bs=512 seek=$lba count=8 oflag=direct conv=notrunc 2>/dev/null; done
nvme compare /dev/nvme0n1 -s 4096 -c 7 -z 4096 -d /tmp/p8 > /dev/null 2>&1; echo $? > /out/nvm-cli-compare.rc
nvme-flash /dev/nvme0 compare -s 8192 -c 7 -d /tmp/p8 2> /out/nvm-flash-compare.err; echo $? > /out/nvm-flash-compare.rc
nvme compare /dev/nvme0n1 -s 4096 -c 7 -z 4096 -d /tmp/other > /dev/null 2>&1; echo $? > /out/nvm-cli-compare-bad.rc
nvme-flash /dev/nvme0 compare -s 8192 -c 7 -d /tmp/other 2> /out/nvm-flash-compare-bad.err; echo $? > /out/nvm-flash-compare-bad.rc
nvme write-zeroes /dev/nvme0n1 -s 4096 -c 3 > /dev/null 2>&1; echo $? > /out/nvm-cli-wz.rc
nvme-flash /dev/nvme0 write-zeroes -s 8192 -c 3 2> /out/nvm-flash-wz.err; echo $? > /out/nvm-flash-wz.rc
nvme dsm /dev/nvme0n1 --slbs=4100 --blocks=4 --ad > /dev/null 2>&1; echo $? > /out/nvm-cli-dsm.rc
nvme-flash /dev/nvme0 dsm --slbs 8196 --blocks 4 --ad 2> /out/nvm-flash-dsm.err; echo $? > /out/nvm-flash-dsm.rc
nvme flush /dev/nvme0n1 > /dev/null 2>&1; echo $? > /out/nvm-cli-flush.rc
nvme-flash /dev/nvme0 flush 2> /out/nvm-flash-flush.err; echo $? > /out/nvm-flash-flush.rc
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/nvme0n1 of=/tmp/range-cli bs=512 skip=4096 count=8 iflag=direct 2>/dev/null
dd if=/dev/nvme0n1 of=/tmp/range-flash bs=512 skip=8192 count=8 iflag=direct 2>/dev/null
cmp /tmp/range-cli /tmp/range-flash; echo $? > /out/nvm-ranges.cmp
nvme write-uncor /dev/nvme0n1 -s 4096 -c 0 > /dev/null 2>&1; echo $? > /out/nvm-cli-uncor.rc
nvme-flash /dev/nvme0 write-uncor -s 8192 -c 0 2> /out/nvm-flash-uncor.err; echo $? > /out/nvm-flash-uncor.rc
nvme read /dev/nvme0n1 -s 4096 -c 0 -z 512 -d /tmp/r1 > /dev/null 2>&1; echo $? > /out/nvm-cli-uncor-read.rc
nvme-flash /dev/nvme0 read --slba 8192 -o /tmp/r2 2> /out/nvm-flash-uncor-read.err; echo $? > /out/nvm-flash-uncor-read.rc
# A passthrough I/O larger than one command may carry (MDTS) goes as several commands, and its data reads back
# through the block device too.
bench-agent io --target /dev/ng0n1 --rw write --bs 2M --iodepth 2 --size 8M --verify --json > /out/uring-cmd-mdts.json 2> /out/uring-cmd-mdts.err; echo $? > /out/uring-cmd-mdts.rc
bench-agent io --target /dev/nvme0n1 --rw read --bs 2M --iodepth 2 --size 8M --direct --verify --json > /out/uring-cmd-mdts-blk.json 2> /out/uring-cmd-mdts-blk.err; echo $? > /out/uring-cmd-mdts-blk.rc
# NVM subsystem reset, nvme-cli's and then nvme-flash's, each followed by waiting for the drive.
nvme subsystem-reset /dev/nvme0 > /out/cli-nssr.out 2>&1; echo $? > /out/cli-nssr.rc
nvme-flash /dev/nvme0 wait --for 20s 2> /out/cli-nssr-wait.err; echo $? > /out/cli-nssr-wait.rc
nvme-flash /dev/nvme0 reset --subsystem 2> /out/flash-nssr.err; echo $? > /out/flash-nssr.rc
nvme-flash /dev/nvme0 wait --for 20s 2> /out/flash-nssr-wait.err; echo $? > /out/flash-nssr-wait.rc
# An orderly power cycle through the agent on a real driver: the drive leaves the PCI bus (nvme_remove gives it a
# shutdown notification), the "power" (a command that does nothing here) cycles, a PCI rescan brings it back and
# the plan goes on with the drive found again by serial.
mkdir -p /tmp/agent
cat > /tmp/rigs.toml <<'RIGS'
[agent]
name = "qemu"
[[rig]]
name = "qemu-r1"
drive = { serial = "NVFARMQEMU0001" }
power = { command = { on = "true", off = "true" } }
RIGS
cat > /tmp/cycle.toml <<'PLAN'
name = "orderly-cycle"
[[step]]
name = "cycle"
kind = "power_cycle"
off_time = "100ms"
[[step]]
name = "identify"
kind = "identify"
expect = { sn = "NVFARMQEMU0001" }
PLAN
for c in /sys/class/nvme/nvme*; do echo "$c $(cat $c/serial) $(cat $c/state) $(cat $c/address)"; done > /out/cycle-ctrls-before
cat /sys/class/nvme/nvme0/address > /out/cycle-pci-before
bench-agent run --rigs /tmp/rigs.toml --rig qemu-r1 --plan /tmp/cycle.toml --work-dir /tmp/agent --json > /out/cycle.json 2> /out/cycle.err; echo $? > /out/cycle.rc
for c in /sys/class/nvme/nvme*; do grep -q NVFARMQEMU0001 $c/serial && cat $c/address; done > /out/cycle-pci-after
dmesg | grep -i nvme > /out/cycle-dmesg

# Runs inside the QEMU VM (see vm.sh): a simulated drive served over NVMe/TCP on the guest's loopback
# (`nvme-flash sim serve`), attached by the kernel's own nvme-tcp host driver, and driven through the real
# kernel and its ioctls by nvme-cli, nvme-flash and bench-agent. Outputs land in /out for tests/qemu_tcp.rs.
set -x
ip link set lo up
insmod /lib/modules/nvme-fabrics.ko; echo $? > /out/insmod-fabrics.rc
insmod /lib/modules/nvme-tcp.ko; echo $? > /out/insmod-tcp.rc
mkdir -p /etc/nvme
echo nqn.2014-08.org.nvmexpress:uuid:0f0e0d0c-0b0a-0908-0706-050403020100 > /etc/nvme/hostnqn
echo 0f0e0d0c-0b0a-0908-0706-050403020100 > /etc/nvme/hostid
NQN=nqn.2024-01.dev.nvfarm:sim:NVFTCP0001
nvme-flash sim create /tmp/d1 --serial NVFTCP0001 --size 256M --boot-time 200ms --self-test-short 1s > /out/create.out 2>&1
# d2 activates an image only at a power cycle; d3 takes d2's controller name while d2 is off (see rename-cycle).
nvme-flash sim create /tmp/d2 --serial NVFTCP0002 --size 64M --activation conventional >> /out/create.out 2>&1
nvme-flash sim create /tmp/d3 --serial NVFTCP0003 --size 64M >> /out/create.out 2>&1
nvme-flash sim image --rev 2.0.0 -o /tmp/good.img
nvme-flash sim image --rev 6.6.6 --behaviour boot-fail -o /tmp/bootfail.img
nvme-flash sim image --rev 3.0.0 -o /tmp/cli.img
cp /tmp/good.img /tmp/corrupt.img
printf 'XXXXXXXX' | dd of=/tmp/corrupt.img bs=1 seek=4000 conv=notrunc 2>/dev/null
NVFARM_LOG=info nvme-flash sim serve /tmp/d1 /tmp/d2 /tmp/d3 --listen 127.0.0.1:4420 > /out/serve.out 2> /out/serve.err &
i=0; while ! grep -q serving /out/serve.out && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN --reconnect-delay=1 --ctrl-loss-tmo=30 > /out/connect.out 2>&1; echo $? > /out/connect.rc
ctrl_of() { for c in /sys/class/nvme/nvme*; do if [ "$(cat $c/serial 2>/dev/null | tr -d ' ')" = $1 ]; then basename $c; return; fi; done; }
ctrl() { ctrl_of NVFTCP0001; }
i=0; while [ -z "$(ctrl)" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
C=$(ctrl); echo $C > /out/ctrl
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n ${NQN%1}2 > /out/connect2.out 2>&1; echo $? > /out/connect2.rc
i=0; while [ -z "$(ctrl_of NVFTCP0002)" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
ctrl_of NVFTCP0002 > /out/ctrl2
cat /sys/class/nvme/$C/transport > /out/transport
ns=$(ls /sys/class/nvme/$C/ | grep -o "nvme[0-9]*n1" | head -1); echo $ns > /out/ns
i=0; while [ ! -e /dev/$ns ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
ng=$(echo $ns | sed 's/^nvme/ng/')
# The same drive through both tools.
nvme id-ctrl /dev/$C -o json > /out/cli-id-ctrl.json
nvme-flash /dev/$C info --json > /out/flash-id-ctrl.json; echo $? > /out/flash-id-ctrl.rc
nvme id-ns /dev/$ns -o json > /out/cli-id-ns.json
nvme-flash /dev/$C id-ns --nsid 1 --json > /out/flash-id-ns.json
nvme smart-log /dev/$C -o json > /out/cli-smart.json
nvme-flash /dev/$C log smart --json > /out/flash-smart.json
nvme fw-log /dev/$C -o json > /out/cli-fw.json
nvme-flash /dev/$C log fw --json > /out/flash-fw.json
nvme error-log /dev/$C -e 4 -o json > /out/cli-error.json
nvme-flash /dev/$C log error --entries 4 --json > /out/flash-error.json
nvme-flash sim status /tmp/d1 --json > /out/sim-status.json
nvme-flash serial=NVFTCP0001 info --json > /out/flash-by-serial.json; echo $? > /out/flash-by-serial.rc
# The kernel's own target (nvmet, a file-backed namespace) on port 4421: a second, independent NVMe/TCP controller
# to hold ours against, through the same host driver.
insmod /lib/modules/configfs.ko; insmod /lib/modules/nvmet.ko; insmod /lib/modules/nvmet-tcp.ko; echo $? > /out/insmod-nvmet.rc
mkdir -p /sys/kernel/config; mount -t configfs none /sys/kernel/config
KS=/sys/kernel/config/nvmet/subsystems/nqn.2024-01.dev.nvfarm:kernel-nvmet
mkdir $KS; echo 1 > $KS/attr_allow_any_host
dd if=/dev/zero of=/tmp/nvmet.img bs=1M count=0 seek=64 2>/dev/null
mkdir $KS/namespaces/1; echo /tmp/nvmet.img > $KS/namespaces/1/device_path; echo 1 > $KS/namespaces/1/buffered_io
echo 1 > $KS/namespaces/1/enable; echo $? > /out/nvmet-ns.rc
KP=/sys/kernel/config/nvmet/ports/1; mkdir $KP
echo 127.0.0.1 > $KP/addr_traddr; echo tcp > $KP/addr_trtype; echo 4421 > $KP/addr_trsvcid; echo ipv4 > $KP/addr_adrfam
ln -s $KS $KP/subsystems/
nvme connect -t tcp -a 127.0.0.1 -s 4421 -n nqn.2024-01.dev.nvfarm:kernel-nvmet > /out/nvmet-connect.out 2>&1; echo $? > /out/nvmet-connect.rc
K=$(for c in /sys/class/nvme/nvme*; do if grep -q kernel-nvmet $c/subsysnqn; then basename $c; fi; done)
nvme id-ctrl /dev/$K -o json > /out/nvmet-id-ctrl.json
nvme-flash /dev/$K info --json > /out/nvmet-flash-id-ctrl.json 2> /out/nvmet-flash-id-ctrl.err; echo $? > /out/nvmet-flash-id-ctrl.rc
# Both targets asked for a subsystem they do not have: the kernel's log line for each.
dmesg -c > /dev/null
nvme connect -t tcp -a 127.0.0.1 -s 4421 -n nqn.2024-01.dev.nvfarm:nosuch > /dev/null 2>&1; echo $? > /out/nvmet-nosuch.rc
dmesg -c | grep -v nvmet: > /out/nvmet-nosuch.dmesg
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n nqn.2024-01.dev.nvfarm:nosuch > /dev/null 2>&1; echo $? > /out/sim-nosuch.rc
dmesg -c > /out/sim-nosuch.dmesg
nvme disconnect -n nqn.2024-01.dev.nvfarm:kernel-nvmet > /dev/null 2>&1
# Firmware updates through the kernel: a good image, a corrupt one, one that fails to boot.
nvme-flash serial=NVFTCP0001 update /tmp/good.img --json > /out/update-good.json 2> /out/update-good.err; echo $? > /out/update-good.rc
sleep 0.5
C=$(ctrl); echo $C > /out/ctrl-after-update
cat /sys/class/nvme/$C/firmware_rev > /out/sysfs-fw-after-update
nvme id-ctrl /dev/$C -o json > /out/cli-id-ctrl-after-update.json
nvme fw-log /dev/$C -o json > /out/cli-fw-after-update.json
nvme-flash serial=NVFTCP0001 update /tmp/corrupt.img --json > /out/update-corrupt.json 2> /out/update-corrupt.err; echo $? > /out/update-corrupt.rc
nvme-flash serial=NVFTCP0001 update /tmp/bootfail.img --json > /out/update-bootfail.json 2> /out/update-bootfail.err; echo $? > /out/update-bootfail.rc
sleep 0.5
C=$(ctrl)
cat /sys/class/nvme/$C/firmware_rev > /out/sysfs-fw-after-bootfail
# nvme-cli's own sequence: download, commit (replace slot 3, activate at reset), controller reset.
nvme fw-download /dev/$C --fw=/tmp/cli.img > /out/cli-fw-download.out 2>&1; echo $? > /out/cli-fw-download.rc
nvme fw-commit /dev/$C --slot=3 --action=1 > /out/cli-fw-commit.out 2>&1; echo $? > /out/cli-fw-commit.rc
nvme reset /dev/$C > /out/cli-reset.out 2>&1; echo $? > /out/cli-reset.rc
i=0; while [ "$(cat /sys/class/nvme/$C/state)" != live ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
sleep 0.5
cat /sys/class/nvme/$C/firmware_rev > /out/sysfs-fw-after-cli
nvme fw-log /dev/$C -o json > /out/cli-fw-after-cli.json
nvme-flash /dev/$C log fw --json > /out/flash-fw-after-cli.json
nvme-flash sim status /tmp/d1 --json > /out/sim-after-cli.json
# A drive that comes back as another /dev/nvmeY: d2 activates only at a power cycle, and the power-cycle command
# disconnects it, lets d3 take its controller name, power-cycles it and connects it again.
C2=$(ctrl_of NVFTCP0002)
cat > /tmp/rename-cycle.sh <<CYCLE
nvme disconnect -n ${NQN%1}2
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n ${NQN%1}3
nvme-flash sim power-cycle /tmp/d2
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n ${NQN%1}2
CYCLE
nvme-flash serial=NVFTCP0002 update /tmp/good.img --power-cycle-cmd "sh /tmp/rename-cycle.sh > /out/rename-cycle.out 2>&1" --json > /out/update-rename.json 2> /out/update-rename.err; echo $? > /out/update-rename.rc
echo $C2 > /out/rename-before
ctrl_of NVFTCP0002 > /out/rename-after
ctrl_of NVFTCP0003 > /out/rename-taker
cat /sys/class/nvme/$(ctrl_of NVFTCP0002)/firmware_rev > /out/sysfs-fw-after-rename
# A whole plan: plans/smoke.toml on a rig whose drive is the TCP-attached one, with a good and a boot-fail image.
# Its io step asks for 1000 IOPS, which a drive simulated under software emulation (about 200 IOPS here) cannot
# give: the run lowers that one threshold, and says so in its report.
cat > /tmp/rigs.toml <<RIGS
[agent]
name = "qemu-tcp"
[[rig]]
name = "tcp-a"
labels = { model = "NVFARM SIM X1" }
drive = { serial = "NVFTCP0001" }
RIGS
nvme-flash sim image --rev 4.0.0 -o /tmp/smoke.img
nvme-flash sim image --rev 6.6.7 --behaviour boot-fail -o /tmp/smoke-bootfail.img
bench-agent run --rigs /tmp/rigs.toml --rig tcp-a --plan /data/smoke.toml --set randrw-verify.min_iops=10 --firmware /tmp/smoke.img --work-dir /tmp/agent --junit /out/smoke.xml --json > /out/smoke.json 2> /out/smoke.err; echo $? > /out/smoke.rc
bench-agent run --rigs /tmp/rigs.toml --rig tcp-a --plan /data/smoke.toml --set randrw-verify.min_iops=10 --firmware /tmp/smoke-bootfail.img --work-dir /tmp/agent --junit /out/smoke-bootfail.xml --json > /out/smoke-bootfail.json 2> /out/smoke-bootfail.err; echo $? > /out/smoke-bootfail.rc
cat /sys/class/nvme/$C/firmware_rev > /out/sysfs-fw-after-smoke
# I/O through the block layer (io_uring) and uring_cmd on the generic node, verified; then a latency fault.
bench-agent io --target /dev/$ns --rw write --bs 64k --iodepth 4 --size 4M --verify --direct --json > /out/io-blk-verify.json 2> /out/io-blk-verify.err; echo $? > /out/io-blk-verify.rc
bench-agent io --target /dev/$ng --rw read --bs 64k --iodepth 4 --size 4M --verify --json > /out/io-ng-verify.json 2> /out/io-ng-verify.err; echo $? > /out/io-ng-verify.rc
bench-agent io --target /dev/$ng --rw randread --bs 4k --iodepth 4 --runtime 1s --size 4M --json > /out/io-ng-base.json 2> /out/io-ng-base.err
nvme-flash sim fault /tmp/d1 latency 20ms --opcode read > /out/fault.out 2>&1; echo $? > /out/fault.rc
bench-agent io --target /dev/$ng --rw randread --bs 4k --iodepth 4 --runtime 1s --size 4M --json > /out/io-ng-slow.json 2> /out/io-ng-slow.err
bench-agent io --target /dev/$ns --rw randread --bs 4k --iodepth 4 --runtime 1s --size 4M --direct --json > /out/io-blk-slow.json 2> /out/io-blk-slow.err
nvme-flash sim fault /tmp/d1 clear
# A status fault: one read fails with Unrecovered Read Error (DNR, so the kernel does not retry it).
nvme-flash sim fault /tmp/d1 status 0x4281 --opcode read --count 1
bench-agent io --target /dev/$ng --rw randread --bs 4k --iodepth 4 --runtime 1s --size 4M --json > /out/io-ng-status.json 2> /out/io-ng-status.err; echo $? > /out/io-ng-status.rc
nvme-flash sim fault /tmp/d1 status 0x4281 --opcode read --count 1
bench-agent io --target /dev/$ns --rw randread --bs 4k --iodepth 4 --runtime 1s --size 4M --direct --json > /out/io-blk-status.json 2> /out/io-blk-status.err; echo $? > /out/io-blk-status.rc
nvme-flash sim fault /tmp/d1 clear
# The drive vanishes: the kernel loses the controller and reconnects only once it is power-cycled.
nvme-flash sim fault /tmp/d1 vanish > /out/vanish.out 2>&1
nvme-flash /dev/$C info --json > /dev/null 2> /out/vanish-info.err; echo $? > /out/vanish-info.rc
sleep 2
cat /sys/class/nvme/$C/state > /out/state-vanished 2>&1
nvme-flash sim power-cycle /tmp/d1
i=0; while [ "$(cat /sys/class/nvme/$C/state 2>/dev/null)" != live ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
cat /sys/class/nvme/$C/state > /out/state-after-power-cycle 2>&1
nvme-flash serial=NVFTCP0001 info --json > /out/flash-after-vanish.json; echo $? > /out/flash-after-vanish.rc
nvme disconnect -n $NQN > /out/disconnect.out 2>&1; echo $? > /out/disconnect.rc
nvme disconnect-all
nvme-flash sim status /tmp/d1 --json > /out/sim-status-end.json
kill %1; sleep 0.5
dmesg | grep -i nvme > /out/dmesg.txt || true

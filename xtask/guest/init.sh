#!/bin/sh
# PID 1 of the kmemlab test guest (packed into the initramfs by `cargo xtask vm`).
# It speaks to the host over the console with lines that start with "@@":
#   @@STAGE name     where the guest is (named in the host's hang message)
#   @@READY          module loaded (and kmemlabd started); host may press the button
#                    (or send `press` lines: TRIGGERs, where there is no button)
#   @@JSON line      a line of kmemlabd's log as it is written
#   @@CMD-BEGIN / @@CMD-EXIT rc   around the output of the user's command
#   @@LOG line       the daemon's complete log after it stopped
#   @@DMESG line     the kernel log at the end
#   @@DONE           about to power off
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
stage() { echo "@@STAGE $1"; }
fail() { echo "@@FAIL $*"; poweroff -f; }

/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug
# Keep kernel messages off the console protocol; they are collected at the end.
dmesg -n 1
# kptr_restrict=1: a CAP_SYSLOG reader (root here) sees real addresses in
# /proc/vmallocinfo; with 0 they are hashed even for root.
echo 1 > /proc/sys/kernel/kptr_restrict
. /etc/kmemlab-vm.conf

for m in $PRELOAD; do
    stage "insmod $m"
    insmod "/lib/modules/$m" || fail "insmod $m failed: $(dmesg | tail -n 5)"
done
if [ "$MODULE" = 1 ]; then
    stage insmod
    # MODULE_ARGS: software_device=1 on a machine without the device-tree node.
    insmod /lib/modules/kmemlab.ko $MODULE_ARGS || fail "insmod kmemlab.ko failed: $(dmesg | tail -n 5)"
    [ -c /dev/kmemlab ] || fail "no /dev/kmemlab after insmod: $(dmesg | tail -n 5)"
fi

LOG=/tmp/kmemlabd.log
DAEMON_ARGS=
if [ "$BACKEND" = vfio ] && [ "$DAEMON" = 1 ]; then
    # The PL061 goes to vfio-amba: VFIO's no-IOMMU mode on (the board has no IOMMU; it
    # taints the kernel), then the controller handed over by the packaged script.
    stage vfio-bind
    echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode ||
        fail "cannot turn on VFIO's no-IOMMU mode"
    kmemlab-vfio-bind > /tmp/vfio-bind.out 2>&1 ||
        fail "kmemlab-vfio-bind: $(cat /tmp/vfio-bind.out)"
    DAEMON_ARGS="--backend vfio"
fi
if [ "$DAEMON" = 1 ]; then
    stage daemon
    # kmemlabd logs to stdout, as under systemd; tee keeps the log, the loop
    # shows each line to the host as it is written.
    ( kmemlabd $DAEMON_ARGS 2>/tmp/kmemlabd.err & echo $! > /run/kmemlabd.pid; wait ) \
        | tee "$LOG" | while IFS= read -r line; do echo "@@JSON $line"; done &
    FOLLOW=$!
fi
echo "@@READY"

stage wait-go
# The host sends `go`; before it, on a machine with no button (MODULE_ARGS has
# software_device=1), each `press` line is a press: a TRIGGER.
while read -r go && [ "$go" = press ]; do
    kmemlabctl trigger > /dev/null || fail "kmemlabctl trigger failed"
done
stage cmd
echo "@@CMD-BEGIN"
sh /cmd.sh
rc=$?
echo "@@CMD-EXIT $rc"

stage shutdown
if [ "$DAEMON" = 1 ]; then
    kill -TERM "$(cat /run/kmemlabd.pid)" 2>/dev/null
    wait "$FOLLOW"
    while IFS= read -r line; do echo "@@LOG $line"; done < "$LOG"
    while IFS= read -r line; do echo "@@STDERR $line"; done < /tmp/kmemlabd.err
fi
dmesg | while IFS= read -r line; do echo "@@DMESG $line"; done
echo "@@DONE"
poweroff -f

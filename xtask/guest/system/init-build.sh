#!/bin/sh
# The initramfs that finishes a Debian system image (`cargo xtask vm --system`): it
# loads Debian's virtio_blk and ext4 modules, mounts the image's disk /dev/vda and
# runs debootstrap's second stage there, then installs Debian's kernel packages
# (finish.sh). The host waits for `@@BUILD-OK`; `@@FAIL` lines name what failed.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
    echo "@@FAIL $*"
    sync
    poweroff -f
}
echo "@@STAGE modules"
for m in $(cat /modules.order); do
    insmod "/lib/modules/$m" || fail "insmod $m"
done
tries=0
while [ ! -b /dev/vda ]; do
    tries=$((tries + 1))
    [ $tries -gt 500 ] && fail "no /dev/vda after 10 s"
    usleep 20000
done
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || fail "cannot mount /dev/vda"
mount --bind /dev /mnt/dev
mount -t proc proc /mnt/proc
mount -t sysfs sysfs /mnt/sys
echo "@@STAGE second-stage"
start=$(cut -d' ' -f1 /proc/uptime)
if ! chroot /mnt /debootstrap/debootstrap --second-stage >/dev/null 2>&1; then
    tail -n 40 /mnt/debootstrap/debootstrap.log
    fail "debootstrap --second-stage (log above)"
fi
echo "@@TIME second-stage $start $(cut -d' ' -f1 /proc/uptime)"
echo "@@STAGE kernel-packages"
start=$(cut -d' ' -f1 /proc/uptime)
cp /finish.sh /mnt/root/xtask-finish.sh
chroot /mnt /bin/sh /root/xtask-finish.sh </dev/null || fail "finish.sh (installing Debian's kernel packages)"
rm -f /mnt/root/xtask-finish.sh
echo "@@TIME kernel-packages $start $(cut -d' ' -f1 /proc/uptime)"
umount /mnt/sys /mnt/proc /mnt/dev
umount /mnt || fail "cannot unmount /dev/vda"
sync
echo "@@BUILD-OK"
poweroff -f

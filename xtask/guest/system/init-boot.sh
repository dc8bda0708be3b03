#!/bin/sh
# The initramfs that boots a kmemlab system VM: Debian's virtio_blk and ext4 modules,
# then /dev/vda (a copy-on-write copy of the cached image) becomes the root and
# systemd starts as PID 1.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
    echo "@@FAIL $*"
    poweroff -f
}
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
mount -t ext4 -o rw /dev/vda /mnt || fail "cannot mount /dev/vda"
umount /proc /sys
mount --move /dev /mnt/dev
exec switch_root /mnt /sbin/init

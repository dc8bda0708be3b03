# Run in the new system (chroot) after debootstrap's second stage: install Debian's
# kernel packages of the release the VM boots, as a board that runs it has them.
set -e
export DEBIAN_FRONTEND=noninteractive
# The VM boots with the host's busybox initramfs (init-boot.sh), not with Debian's: skip
# update-initramfs, which the kernel's postinst hook would run (initramfs-tools'
# /etc/kernel/postinst.d/initramfs-tools exits at once when INITRD is No). Under TCG it
# took 632 s of a 1,539 s image build.
export INITRD=No
cd /root/kernel-debs
# linux-image-RELEASE pre-depends on linux-base: configure it first.
dpkg -i linux-base_*.deb
dpkg -i linux-base-*.deb linux-binary-*.deb linux-modules-*.deb linux-image-*.deb
cd /
rm -rf /root/kernel-debs
systemd-machine-id-setup
apt-get clean

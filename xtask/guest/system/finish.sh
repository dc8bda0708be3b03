# Run in the new system (chroot) after debootstrap's second stage: install Debian's
# kernel packages of the release the VM boots, as a board that runs it has them.
set -e
export DEBIAN_FRONTEND=noninteractive
cd /root/kernel-debs
# linux-image-RELEASE pre-depends on linux-base: configure it first.
dpkg -i linux-base_*.deb
dpkg -i linux-base-*.deb linux-binary-*.deb linux-modules-*.deb linux-image-*.deb
cd /
rm -rf /root/kernel-debs
systemd-machine-id-setup
apt-get clean

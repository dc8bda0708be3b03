# kmemlab VM runner, second half (from the run disk, /run/xtask): on the first boot of
# a fresh copy of the image, `dpkg -i` the package and reboot, so that
# systemd-modules-load loads kmemlab.ko at boot as on a board; on the next boot, press
# the button PRESSES times and run the command as root. Lines for the host start
# with `@@`; the command's output comes back as `@@OUT` lines after it ended.
run=/run/xtask
# systemd starts the console with terminal control sequences: keep them off the `@@` lines.
echo
. $run/vm.conf
. $run/lib.sh
if [ ! -e /var/lib/kmemlab-vm/installed ]; then
    echo "@@STAGE install"
    (cd $run && dpkg -i ./kmemlab_*_arm64.deb) >/run/kmemlab-install.log 2>&1
    rc=$?
    sed 's/^/@@INSTALL /' /run/kmemlab-install.log
    [ $rc -eq 0 ] || { echo "@@FAIL dpkg -i exited with $rc"; systemctl poweroff; exit 1; }
    mkdir -p /var/lib/kmemlab-vm
    touch /var/lib/kmemlab-vm/installed
    sync
    echo "@@INSTALLED"
    systemctl reboot
    exit 0
fi
echo "@@STAGE ready"
udevadm settle
echo "@@READY $(cut -d' ' -f1 /proc/uptime)"
i=0
while [ $i -lt "$PRESSES" ]; do
    i=$((i + 1))
    press --unmask || { echo "@@FAIL press $i: $(press_error)"; systemctl poweroff; exit 1; }
done
echo "@@STAGE cmd"
cd /root
(. $run/lib.sh; . $run/cmd.sh) >/run/kmemlab-cmd.out 2>&1 </dev/null
rc=$?
sed 's/^/@@OUT /' /run/kmemlab-cmd.out
echo "@@EXIT $rc"
systemctl poweroff

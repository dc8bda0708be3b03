# The daemon's life in a real Debian system (vmtests_system.rs, system_daemon_lifecycle),
# run as root after `dpkg -i` and a reboot: start, presses, the journal and
# `kmemlabctl report -`, the sandbox (dynamic user, devices), reload with a changed and
# an invalid config, kill -9 and the restart, systemd-analyze security, stop, then
# dpkg -r and dpkg --purge. Each `== NAME` section is checked by the host; commands
# that fail do not stop the script (the host's checks name what is missing).

# pressed N: N press lines (with a numeric seq) of kmemlabd in the journal, bounded.
pressed() { wait_lines "$1" '"seq": *[0-9]' journalctl -u kmemlabd -o cat --no-pager; }
# show PROP...: the unit's properties.
show() { systemctl show kmemlabd "$@"; }
conf=/etc/kmemlab/kmemlabd.conf
systemctl start kmemlabd || { systemctl status kmemlabd; exit 1; }
echo '== started'; show -p Type,ActiveState,SubState,StatusText
for i in 1 2 3; do press && pressed $i; done
echo '== pressed'; systemctl show kmemlabd -p ActiveState,StatusText
echo '== journal'; journalctl -u kmemlabd -o cat --no-pager
echo '== report'; journalctl -u kmemlabd -o json | kmemlabctl report -
pid=$(show -p MainPID --value)
echo '== identity'; show -p User,Group,DynamicUser,SupplementaryGroups,DevicePolicy,DeviceAllow
grep -E '^(Uid|Gid|Groups):' /proc/$pid/status
echo "ps $(ps -o user=,group=,supgrp= -p $pid)"
getent group kmemlab
echo '== devices'
# A third device: a shell moved into the daemon's cgroup is under the same device
# program (cgroup v2 BPF_CGROUP_DEVICE, which applies to root as well) as the daemon, so
# what it may open there is what the daemon may open. The same opens outside, to show
# the refusals are the cgroup's and not the files' modes.
sh -c 'echo $$ >/sys/fs/cgroup/system.slice/kmemlabd.service/cgroup.procs || exit 9
       for d in /dev/kmemlab /dev/$(. /run/xtask/lib.sh; uio_dev) /dev/vda /dev/ttyAMA0 /dev/mem; do
           if (: <"$d") 2>/dev/null; then echo "open $d ok"; else echo "open $d refused: $( (: <"$d") 2>&1)"; fi
       done' </dev/null; echo "devices shell $?"
for d in /dev/vda /dev/ttyAMA0 /dev/mem; do
    (: <"$d") 2>/dev/null && echo "outside open $d ok"
done
echo '== reload'
cp $conf /run/kmemlabd.conf.orig
sed -i 's/^plan = .*/plan = "vmalloc:8K:GFP_KERNEL"/' $conf
systemctl reload kmemlabd; echo "reload exit $?"
show -p ActiveState,StatusText
press && pressed 4
echo '== reload-invalid'
echo 'no_such_key = 1' >>$conf
systemctl reload kmemlabd; echo "reload exit $?"
show -p ActiveState,StatusText
press && pressed 5
echo '== journal2'; journalctl -u kmemlabd -o cat --no-pager
echo '== warnings'; journalctl -u kmemlabd -p warning -o cat --no-pager
echo '== kill'
# The daemon holds an allocation when it is killed: the module frees it on close.
# A valid config again (a restart with the invalid one would exit with status 2).
cp /run/kmemlabd.conf.orig $conf
sed -i 's/^plan = .*/plan = "vmalloc:8K:GFP_KERNEL"/' $conf
press && pressed 6
echo '== held'; kmemlabctl stats --json
echo '== before-kill'; show -p NRestarts
kill -9 $pid
tries=0
while :; do
    new=$(show -p MainPID --value)
    [ "$(show -p ActiveState --value)" = active ] && [ "$new" != 0 ] && [ "$new" != $pid ] && break
    tries=$((tries + 1)); [ $tries -gt 300 ] && { echo "no restart within 30 s"; break; }
    sleep 0.1
done
echo '== restarted'; show -p NRestarts,ActiveState,SubState,MainPID,StatusText
echo "old $pid new $new"
echo '== after-kill'; kmemlabctl stats --json
press && pressed 7
press && pressed 8
echo '== new-pid'; journalctl -u kmemlabd _PID=$new -o cat --no-pager
echo '== after-presses'; kmemlabctl stats --json
echo '== security'; systemd-analyze security kmemlabd --no-pager | tail -n 3
echo '== enable'
# Enabled, as a board that starts it at boot has it: the purge must take the link away.
systemctl enable kmemlabd; echo "enable exit $?"
echo '== stop'
systemctl stop kmemlabd; echo "stop exit $?"
show -p ActiveState,Result,ExecMainCode,ExecMainStatus
echo '== stop-journal'; journalctl -u kmemlabd _PID=$new -o cat --no-pager
echo '== stopped-stats'; kmemlabctl stats --json
echo '== files'
dpkg -L kmemlab | while read -r f; do [ -d "$f" ] || echo "$f"; done >/run/kmemlab.files
cat /run/kmemlab.files
echo '== remove'
dpkg -r kmemlab; echo "dpkg -r exit $?"
echo '== after-remove'
while read -r f; do { [ -e "$f" ] || [ -L "$f" ]; } && echo "left $f"; done </run/kmemlab.files
echo "status $(dpkg-query -W -f '${db:Status-Abbrev}' kmemlab)"
show -p LoadState
lsmod | grep -E '^kmemlab ' || echo 'no kmemlab module loaded'
echo "module maps naming kmemlab: $(grep -l kmemlab /lib/modules/$(uname -r)/modules.* 2>/dev/null | tr '\n' ' ')"
echo '== purge'
dpkg --purge kmemlab; echo "dpkg --purge exit $?"
echo '== after-purge'
while read -r f; do { [ -e "$f" ] || [ -L "$f" ]; } && echo "left $f"; done </run/kmemlab.files
[ -e /etc/kmemlab ] && echo "left /etc/kmemlab"
echo "status $(dpkg-query -W -f '${db:Status-Abbrev}' kmemlab 2>&1)"
getent group kmemlab && echo "group kmemlab stays"
echo "owned by group kmemlab: $(find / -xdev -group kmemlab 2>/dev/null | tr '\n' ' ')"
echo "named kmemlab: $(find / -xdev -name '*kmemlab*' ! -path '/var/lib/kmemlab-vm*' 2>/dev/null | tr '\n' ' ')"
echo "uio: $(lsmod | grep -E '^uio ' || echo 'not loaded')"
echo '== end'

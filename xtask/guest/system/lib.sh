# Shell functions for commands run by `cargo xtask vm --system` (sourced before CMD).

# uio_dev: the name (uioN) of kmemlab's UIO device.
uio_dev() {
    for d in /sys/class/uio/uio*; do
        [ "$(cat "$d/name" 2>/dev/null)" = kmemlab ] && { echo "${d##*/}"; return 0; }
    done
    return 1
}

# press [--unmask]: has the host press the board's button once (QMP), and waits (at
# most 10 s) until the UIO device counted the interrupt. --unmask then unmasks the
# line, as kmemlabd does after each event (for presses with no daemon running).
press() {
    PRESS_ERROR=
    u=$(uio_dev) || { PRESS_ERROR="no kmemlab UIO device"; echo "press: $PRESS_ERROR"; return 1; }
    before=$(cat /sys/class/uio/$u/event)
    echo "@@PRESS-NOW" >/dev/ttyAMA0
    tries=0
    while [ "$(cat /sys/class/uio/$u/event)" -le "$before" ]; do
        tries=$((tries + 1))
        if [ $tries -gt 1000 ]; then
            PRESS_ERROR="no interrupt counted on $u within 10 s (count $before)"
            echo "press: $PRESS_ERROR"
            return 1
        fi
        sleep 0.01
    done
    [ "$1" = --unmask ] && printf '\001\000\000\000' >/dev/$u
    return 0
}
press_error() { echo "$PRESS_ERROR"; }

# wait_lines N PATTERN CMD...: waits (at most 20 s) until CMD's output has N lines
# matching PATTERN (grep -E).
wait_lines() {
    n=$1 pattern=$2
    shift 2
    tries=0
    while [ "$("$@" 2>/dev/null | grep -cE "$pattern")" -lt "$n" ]; do
        tries=$((tries + 1))
        if [ $tries -gt 200 ]; then
            echo "timed out waiting for $n lines matching $pattern in: $*"
            "$@"
            return 1
        fi
        sleep 0.1
    done
}

# Shared helpers for tests/mailstack/start and tests/mailstack/stop (sourced, not run).
# shellcheck shell=bash

ms_die() {
    echo "mailstack: $*" >&2
    exit 1
}

# Prints the last lines of each log file given, under a header, to stderr.
ms_log_tail() {
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        echo "---- last lines of $f ----" >&2
        tail -n 25 "$f" >&2
    done
}

# Reads a pid file (postfix pads it with spaces) and prints the pid, or nothing.
ms_read_pid() {
    local f=$1 pid
    [ -r "$f" ] || return 0
    pid=$(head -n 1 "$f" | tr -cd '0-9')
    [ -n "$pid" ] && echo "$pid"
    return 0
}

# True when PID runs and its working directory is inside DIR: guards against a
# stale pid file whose pid now belongs to an unrelated process.
ms_pid_is_ours() {
    local pid=$1 dir=$2 cwd
    [ -n "$pid" ] || return 1
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 1
    case "$cwd" in
        "$dir" | "$dir"/*) return 0 ;;
        *) return 1 ;;
    esac
}

# Prints the pids of the direct children of PID.
ms_children() {
    local parent=$1 stat rest ppid p
    for stat in /proc/[0-9]*/stat; do
        # the command name (field 2) may hold spaces: cut after the last ')'
        rest=$(cat "$stat" 2>/dev/null) || continue
        rest=${rest##*) }
        ppid=${rest#* }
        ppid=${ppid%% *}
        if [ "$ppid" = "$parent" ]; then
            p=${stat#/proc/}
            echo "${p%/stat}"
        fi
    done
}

# Stops one daemon of a stack: TERM to its master (read from PIDFILE, only if its
# cwd is inside DIR) and to the master's direct children, then waits until all
# of them are gone; KILL after 10 s.
ms_stop_master() {
    local name=$1 pidfile=$2 dir=$3 master pids p i
    master=$(ms_read_pid "$pidfile")
    if ! ms_pid_is_ours "$master" "$dir"; then
        return 0
    fi
    pids="$master $(ms_children "$master" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for ((i = 0; i < 400; i++)); do
        local alive=""
        for p in $pids; do
            [ -d "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] && alive="$alive $p"
        done
        [ -z "$alive" ] && return 0
        pids=$alive
        sleep 0.025
    done
    echo "mailstack: $name did not exit within 10 s, killing pids:$pids" >&2
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
}

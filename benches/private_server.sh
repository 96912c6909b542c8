# Helpers of the scripts that start and stop a private reference server
# (benches/dovecot, benches/cyrus) under a directory of its own (sourced).

# Make DIR absolute (creating it) and refuse one where NAME already runs or
# whose path is too long for the server's unix sockets (~100 bytes).
# Prints the absolute path.
private_dir() { # NAME DIR
    local name=$1 dir
    mkdir -p "$2"
    dir=$(cd "$2" && pwd)
    if [[ -s $dir/run/master.pid ]] && kill -0 "$(cat "$dir/run/master.pid")" 2>/dev/null; then
        echo "a $name already runs from $dir (pid $(cat "$dir/run/master.pid")); stop.sh it first" >&2
        return 1
    fi
    if (( ${#dir} > 60 )); then
        echo "DIR path too long for $name's unix sockets (keep it under 60 chars): $dir" >&2
        return 1
    fi
    echo "$dir"
}

# Stop the master whose PID is in PIDFILE (SIGTERM, which stops its
# children; SIGKILL after 10 s).
stop_master() { # NAME PIDFILE
    local name=$1 pidfile=$2 pid i
    if [[ ! -s $pidfile ]]; then
        echo "no $name pid file at $pidfile; nothing to stop" >&2
        return 0
    fi
    pid=$(cat "$pidfile")
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "$name pid $pid is not running" >&2
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid"
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || { echo "$name pid $pid stopped" >&2; rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    echo "$name pid $pid ignored SIGTERM for 10 s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

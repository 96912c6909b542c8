# Helpers shared by benches/lmtp.sh and benches/imap.sh (sourced, not run).

# Wait until 127.0.0.1:PORT accepts connections, while process PID lives.
wait_port() { # PORT PID SECONDS
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# The value of KEY in a cove-load RESULT line.
kv() { # KEY RESULT-LINE
    tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"
}

# Stop the cove started by the script (SIGTERM, then SIGKILL after 10 s).
stop_cove() {
    if [[ -n ${COVE_PID:-} ]] && kill -0 "$COVE_PID" 2>/dev/null; then
        kill -TERM "$COVE_PID"
        for _ in $(seq 100); do kill -0 "$COVE_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$COVE_PID" 2>/dev/null || true
        wait "$COVE_PID" 2>/dev/null || true
    fi
    COVE_PID=""
}

# Two cove nodes A and B, peers of each other over loopback TLS, for the
# replication benchmarks (repl.sh, catchup.sh); sourced, not run. Needs
# ROOT, BASE_PORT and common.sh. pair_setup PREFIX builds cove and
# cove-load (release; COVE_BIN names a cove built elsewhere), sets COVE,
# LOAD and DIR (a new temp dir) and stops everything at exit (KEEP=1 keeps
# DIR). Node A listens on BASE_PORT+0..3 (LMTP, IMAP, HTTP, replication),
# B on BASE_PORT+10..13, the rsync daemon on BASE_PORT+20.

pair_setup() { # PREFIX
    [[ -n ${COVE_BIN:-} ]] || cargo build --release -q -p cove -p cove-benches --manifest-path "$ROOT/Cargo.toml"
    COVE=${COVE_BIN:-$ROOT/target/release/cove}
    LOAD="$ROOT/target/release/cove-load"
    DIR=$(mktemp -d "/tmp/$1.XXXXXX")
    declare -gA PID=()
    RSYNCD_PID=""
    trap pair_cleanup EXIT
}

pair_cleanup() {
    for n in a b; do
        COVE_PID=${PID[$n]:-}
        stop_cove
    done
    [[ -n $RSYNCD_PID ]] && kill "$RSYNCD_PID" 2>/dev/null
    if [[ -z ${KEEP:-} ]]; then rm -rf "$DIR"; else echo "kept $DIR"; fi
}

port() { # NODE OFFSET
    local base=$BASE_PORT
    [[ $1 == b ]] && base=$((BASE_PORT + 10))
    echo $((base + $2))
}

write_config() { # NODE REPLICATION(0/1)
    local n=$1 other=b
    [[ $n == b ]] && other=a
    mkdir -p "$DIR/$n"
    {
        echo "data_dir = \"$DIR/$n/data\""
        echo "hostname = \"node-$n\""
        echo "[lmtp]"
        echo "listen = [\"127.0.0.1:$(port "$n" 0)\"]"
        echo "max_message_size = 10485760"
        echo "[imap]"
        echo "listen = [\"127.0.0.1:$(port "$n" 1)\"]"
        echo "[http]"
        echo "listen = [\"127.0.0.1:$(port "$n" 2)\"]"
        if [[ $2 == 1 ]]; then
            echo "[replication]"
            echo "listen = [\"127.0.0.1:$(port "$n" 3)\"]"
            echo "secret = \"benchmark-secret-0123456789\""
            echo "debounce_ms = 100"
            echo "backoff_max_secs = 2"
            [[ -n ${KEEP_EXPUNGES_SECS:-} ]] && echo "keep_expunges_secs = $KEEP_EXPUNGES_SECS"
            echo "[[replication.peers]]"
            echo "name = \"node-$other\""
            echo "address = \"127.0.0.1:$(port "$other" 3)\""
        fi
    } >"$DIR/$n/cove.toml"
}

start() { # NODE
    "$COVE" --config "$DIR/$1/cove.toml" serve >>"$DIR/$1/log" 2>&1 &
    PID[$1]=$!
    wait_port "$(port "$1" 0)" "${PID[$1]}" 30 || { echo "node $1 did not start"; tail "$DIR/$1/log"; exit 1; }
}

stop() { # NODE
    COVE_PID=${PID[$1]:-}
    stop_cove
    PID[$1]=""
}

metric_bytes() { # NODE -> sent+received
    curl -s "http://127.0.0.1:$(port "$1" 2)/metrics" |
        awk '/^cove_replication_bytes_(sent|received)_total/ {s += $2} END {printf "%d", s}'
}

inbox_count() { # NODE USER
    "$COVE" --config "$DIR/$1/cove.toml" mailbox list "$2" 2>/dev/null | awk '$1 == "INBOX" {print $3}'
}

adduser() { # NODE USER [PASSWORD]
    if [[ -n ${3:-} ]]; then
        printf '%s\n' "$3" | "$COVE" --config "$DIR/$1/cove.toml" user add "$2" --password-stdin >/dev/null
    else
        "$COVE" --config "$DIR/$1/cove.toml" user add "$2" </dev/null >/dev/null
    fi
}

# An rsync daemon on loopback port BASE_PORT+20 serving SERVED (default:
# A's data directory) as module "a" (rsync://127.0.0.1:$RSYNC_PORT/a/), as
# this user: cove's data directory is private to it. Its config goes to
# CONF_DIR (default DIR). Sets RSYNC_PORT and RSYNCD_PID.
start_rsyncd() { # [SERVED [CONF_DIR]]
    local served=${1:-$DIR/a/data} conf=${2:-$DIR}/rsyncd.conf
    command -v rsync >/dev/null || { echo "rsync is not installed (apt-get install rsync)"; exit 1; }
    RSYNC_PORT=$((BASE_PORT + 20))
    printf 'use chroot = no\nuid = %s\ngid = %s\n[a]\npath = %s\nread only = yes\n' \
        "$(id -u)" "$(id -g)" "$served" >"$conf"
    rsync --daemon --no-detach --address=127.0.0.1 --port="$RSYNC_PORT" --config="$conf" &
    RSYNCD_PID=$!
    wait_port "$RSYNC_PORT" "$RSYNCD_PID" 10 || { echo "rsync daemon did not start"; exit 1; }
}

mbps() { echo "scale=1; $1 / $2 / 1000000" | bc -l; }

//! `cove serve`: bind every configured listener, serve until SIGTERM or
//! SIGINT, then stop cleanly: listeners close, sessions finish the command
//! they are in (a delivery in progress completes), nothing is half-written.

use anyhow::Context;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::imap::{self, ImapContext};
use crate::lmtp::{self, LmtpContext};

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let store = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || crate::cli::open_store(&config)).await??
    };
    let store = Arc::new(store);
    let tls = crate::tls::acceptor(&config)?;
    let (stop, stopped) = watch::channel(false);
    let sessions = Arc::new(Mutex::new(JoinSet::new()));
    let mut loops = JoinSet::new();

    if let Some(lmtp_config) = &config.lmtp {
        let ctx = Arc::new(LmtpContext::new(
            store.clone(),
            lmtp_config.clone(),
            config.hostname.clone(),
            Some(tls.clone()),
            stopped.clone(),
        ));
        for addr in &lmtp_config.listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("[lmtp] listen: cannot bind {addr}"))?;
            tracing::info!("lmtp listening on {}", listener.local_addr()?);
            loops.spawn(lmtp::accept_loop(listener, ctx.clone(), sessions.clone()));
        }
    }
    // One small set of threads checks passwords for every protocol.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let passwords =
        Arc::new(crate::auth::PasswordCheckers::new(cores).context("start the password threads")?);
    if let Some(imap_config) = &config.imap {
        let ctx = Arc::new(ImapContext::new(
            store.clone(),
            imap_config.clone(),
            config.hostname.clone(),
            Some(tls.clone()),
            stopped.clone(),
            passwords.clone(),
        ));
        for (addrs, implicit_tls, key) in [
            (&imap_config.listen, false, "listen"),
            (&imap_config.tls_listen, true, "tls_listen"),
        ] {
            for addr in addrs {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("[imap] {key}: cannot bind {addr}"))?;
                let proto = if implicit_tls { "imaps" } else { "imap" };
                tracing::info!("{proto} listening on {}", listener.local_addr()?);
                loops.spawn(imap::accept_loop(
                    listener,
                    ctx.clone(),
                    sessions.clone(),
                    implicit_tls,
                ));
            }
        }
    }
    let not_yet = [
        (
            "pop3",
            config
                .pop3
                .as_ref()
                .map(|s| [s.listen.clone(), s.tls_listen.clone()].concat()),
        ),
        ("http", config.http.as_ref().map(|s| s.listen.clone())),
    ];
    for (proto, addrs) in not_yet {
        for addr in addrs.unwrap_or_default() {
            tracing::warn!(
                "{proto} listener {addr} is configured but {proto} is not served by this version yet"
            );
        }
    }
    tracing::info!(data_dir = %config.data_dir.display(), hostname = %config.hostname, "cove {} serving", env!("CARGO_PKG_VERSION"));

    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    let _ = stop.send(true);
    while loops.join_next().await.is_some() {}

    let mut set = match sessions.lock() {
        Ok(mut s) => std::mem::take(&mut *s),
        Err(_) => JoinSet::new(),
    };
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let open = set.len();
    if tokio::time::timeout(grace, async { while set.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = set.len(),
            "sessions still open after the grace period; closing them"
        );
        set.abort_all();
        while set.join_next().await.is_some() {}
    }
    tracing::info!(sessions = open, "stopped");
    Ok(())
}

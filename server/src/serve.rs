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
use crate::reload::{Live, Part, limits_part};

/// Start replication: the peers' listener, one task per peer, and the
/// store's change hook that queues changed users.
async fn start_replication(
    config: &Config,
    r: &crate::config::ReplicationConfig,
    store: &Arc<cove_store::Store>,
    tls: &tokio_rustls::TlsAcceptor,
    stopped: &watch::Receiver<bool>,
    loops: &mut JoinSet<()>,
) -> anyhow::Result<Arc<cove_sync::replicator::Replicator>> {
    use cove_sync::replicator::{Options, PeerSpec, Replicator};
    use cove_sync::transport::Secret;
    let secret = match (&r.secret, &r.secret_file) {
        (Some(s), _) => Secret::new(s).context("[replication] secret")?,
        (None, Some(f)) => {
            crate::private_files::refuse_world_readable(f, "[replication] secret_file")?;
            Secret::from_file(f).context("[replication] secret_file")?
        }
        (None, None) => anyhow::bail!("[replication] needs secret or secret_file"),
    };
    let replicator = Replicator::new(
        store.clone(),
        Options {
            node: config.hostname.clone(),
            secret,
            peers: r
                .peers
                .iter()
                .map(|p| PeerSpec {
                    name: p.name.clone(),
                    address: p.address.clone(),
                })
                .collect(),
            debounce: Duration::from_millis(r.debounce_ms),
            full_sync_interval: Duration::from_secs(r.full_sync_interval_secs),
            backoff_max: Duration::from_secs(r.backoff_max_secs),
            connect_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_millis(r.heartbeat_ms),
            heartbeat_timeout: Duration::from_millis(r.heartbeat_timeout_ms),
            links: cove_sync::admission::LinkLimits {
                max_pending: r.max_pending_links,
                max_pending_per_ip: r.max_pending_links_per_ip,
                max_links: r.max_links,
            },
            sessions_per_peer: r.sessions_per_peer,
        },
    );
    store.set_peer_limits(peer_limits(config, r));
    store.set_history(cove_store::replica::History {
        keep_changes: r.keep_changes,
        keep_expunges_ms: r.keep_expunges_secs.saturating_mul(1000),
    });
    let hook_target = Arc::downgrade(&replicator);
    store.set_change_hook(Arc::new(move |user: &str| {
        if let Some(r) = hook_target.upgrade() {
            r.queue(user);
        }
    }));
    for addr in &r.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("[replication] listen: cannot bind {addr}"))?;
        tracing::info!("replication listening on {}", listener.local_addr()?);
        loops.spawn(
            replicator
                .clone()
                .accept_loop(listener, tls.clone(), stopped.clone()),
        );
    }
    for handle in replicator.start(stopped.clone()) {
        loops.spawn(async move {
            let _ = handle.await;
        });
    }
    Ok(replicator)
}

/// `[mta] socketmap_listen`: the MTA's lookups (cluster::socketmap).
async fn start_socketmap(
    mta: &crate::config::MtaConfig,
    cluster: &Arc<crate::cluster::Cluster>,
    users: &Arc<crate::cluster::lookup::Users>,
    stopped: &watch::Receiver<bool>,
    loops: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let lookups = Arc::new(crate::cluster::socketmap::MtaLookups {
        cluster: cluster.clone(),
        users: users.clone(),
        remote_timeout: Duration::from_millis(mta.remote_timeout_ms),
    });
    for addr in &mta.socketmap_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("[mta] socketmap_listen: cannot bind {addr}"))?;
        tracing::info!("socketmap listening on {}", listener.local_addr()?);
        loops.spawn(crate::cluster::socketmap::serve(
            listener,
            lookups.clone(),
            mta.clone(),
            stopped.clone(),
        ));
    }
    Ok(())
}

/// What a peer may send (`[replication]`; the largest message by default
/// is the largest this node accepts itself, and a margin).
fn peer_limits(
    config: &Config,
    r: &crate::config::ReplicationConfig,
) -> cove_store::replica::PeerLimits {
    let own_largest = [
        config.lmtp.as_ref().map(|l| l.max_message_size),
        config.imap.as_ref().map(|i| i.max_literal_size),
    ]
    .into_iter()
    .flatten()
    .max();
    let defaults = cove_store::replica::PeerLimits::default();
    let max_blob_bytes = r.max_content_size.unwrap_or_else(|| {
        own_largest.map_or(defaults.max_blob_bytes, |m| m.saturating_add(1024 * 1024))
    });
    cove_store::replica::PeerLimits {
        max_clock_skew_ms: r.max_clock_skew_secs.saturating_mul(1000),
        max_blob_bytes,
        max_session_bytes: r.max_session_bytes.max(max_blob_bytes),
        apply_chunk_messages: r.apply_chunk_messages.max(1),
    }
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    if config.data_dir.exists() {
        crate::private_files::tighten_data_dir(&config.data_dir)?;
    }
    if let Some(t) = &config.tls {
        crate::private_files::refuse_world_readable(&t.key, "[tls] key")?;
    }
    // Started as root with `[server] user`: what is made on disk before the
    // drop belongs to that user (server/src/privileges.rs).
    let owner = crate::privileges::plan(&config)?;
    let store = {
        let config = config.clone();
        let owner = owner.clone();
        tokio::task::spawn_blocking(move || {
            crate::privileges::as_owner(owner.as_ref(), || {
                crate::cli::open_store(&config)?
                    .with_space_reserve(config.server.reserve_bytes)
                    .context("[server] reserve_bytes")
            })
        })
        .await??
    };
    let store = Arc::new(store);
    crate::proxy::set_trusted(
        crate::proxy::TrustedProxies::parse(&config.trusted_proxies).map_err(anyhow::Error::msg)?,
    );
    let (tls, certificate) =
        crate::privileges::as_owner(owner.as_ref(), || crate::tls::acceptor(&config))?;
    let reloader = crate::reload::Reloader::new(
        config.source.clone(),
        &config
            .source
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default(),
    );
    register_reloads(&reloader, certificate);
    // One small set of threads checks passwords for every protocol, behind
    // one authentication service; made before any listener announces
    // itself (the stand-in hash takes an argon2 run, and a client or a
    // signal may follow that announcement at once).
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut checkers =
        crate::auth::PasswordCheckers::new(cores).context("start the password threads")?;
    if !config.auth.rehash_legacy {
        checkers = checkers.keeping_legacy_hashes();
    }
    let passwords = Arc::new(checkers);
    let auth = Arc::new(
        crate::auth::Authenticator::new(store.clone(), passwords, config.auth.schedule())
            .await
            .context("start the authentication service")?,
    );
    let (stop, stopped) = watch::channel(false);
    let sessions = Arc::new(Mutex::new(JoinSet::new()));
    let mut loops = JoinSet::new();

    loops.spawn(
        crate::housekeeping::Housekeeping {
            tick: Duration::from_secs(1),
            batch: 1000,
            full_gc_every: (config.server.gc_interval_secs > 0)
                .then(|| Duration::from_secs(config.server.gc_interval_secs)),
            repair_every: Duration::from_secs(60),
            index_idle_close: (config.server.index_idle_close_secs > 0)
                .then(|| Duration::from_secs(config.server.index_idle_close_secs)),
        }
        .run(store.clone(), stopped.clone()),
    );
    let replicator = match &config.replication {
        Some(r) => Some(start_replication(&config, r, &store, &tls, &stopped, &mut loops).await?),
        None => None,
    };
    // `cove node drain` sets it; /health and the cluster's routing read it.
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cluster = match &config.cluster {
        Some(c) => {
            let cluster = crate::cluster::Cluster::new(c, &config.hostname, draining.clone())?;
            loops.spawn(cluster.clone().run_health(stopped.clone()));
            // SIGHUP re-reads the map (the same file on every node).
            let live = cluster.clone();
            reloader.register(Part::new(
                "cluster map",
                |k| k.starts_with("cluster"),
                move |c| match &c.cluster {
                    Some(map) => live.reload(map).map(|()| None),
                    None => anyhow::bail!("[cluster] cannot be removed without a restart"),
                },
            ));
            Some(cluster)
        }
        None => None,
    };
    let users = Arc::new(crate::cluster::lookup::Users {
        store: store.clone(),
        replicator: replicator.clone(),
        delimiter: config.lmtp.as_ref().and_then(|l| l.delimiter()),
    });
    if let (Some(mta), Some(cluster)) = (&config.mta, &cluster) {
        start_socketmap(mta, cluster, &users, &stopped, &mut loops).await?;
    }
    let sieve = match &config.sieve {
        Some(s) => Some(Arc::new(crate::sieve::SieveEngine::new(
            s,
            &config.hostname,
        )?)),
        None => None,
    };
    if let Some(lmtp_config) = &config.lmtp {
        let sync_delivery = match (&config.replication, &replicator) {
            (Some(r), Some(rep)) if r.sync_delivery => Some((
                rep.clone(),
                Duration::from_millis(r.sync_delivery_timeout_ms),
            )),
            _ => None,
        };
        let ctx = Arc::new(Live::new(
            LmtpContext::new(
                store.clone(),
                lmtp_config.clone(),
                config.hostname.clone(),
                Some(tls.clone()),
                stopped.clone(),
                sync_delivery,
            )
            .with_replicator(replicator.clone())
            .with_sieve(sieve.clone()),
        ));
        reloader.register(limits_part("lmtp limits", "lmtp", ctx.clone(), |c| {
            c.lmtp.as_ref()
        }));
        for addr in &lmtp_config.listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("[lmtp] listen: cannot bind {addr}"))?;
            tracing::info!("lmtp listening on {}", listener.local_addr()?);
            loops.spawn(lmtp::accept_loop(listener, ctx.clone(), sessions.clone()));
        }
    }
    // Where this node serves IMAP and POP3 in clear text (the first
    // listener of each): what nginx's auth_http is told.
    let mut serving = Serving::default();
    if let Some(imap_config) = &config.imap {
        let ctx = Arc::new(Live::new(ImapContext::new(
            store.clone(),
            imap_config.clone(),
            config.hostname.clone(),
            Some(tls.clone()),
            stopped.clone(),
            auth.clone(),
        )));
        reloader.register(limits_part("imap limits", "imap", ctx.clone(), |c| {
            c.imap.as_ref()
        }));
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
                if !implicit_tls && serving.imap.is_none() {
                    serving.imap = Some(listener.local_addr()?);
                }
                loops.spawn(imap::accept_loop(
                    listener,
                    ctx.clone(),
                    sessions.clone(),
                    implicit_tls,
                ));
            }
        }
    }
    if let Some(pop3_config) = &config.pop3 {
        let ctx = Arc::new(Live::new(crate::pop3::Pop3Context::new(
            store.clone(),
            pop3_config.clone(),
            config.hostname.clone(),
            Some(tls.clone()),
            stopped.clone(),
            auth.clone(),
        )));
        reloader.register(limits_part("pop3 limits", "pop3", ctx.clone(), |c| {
            c.pop3.as_ref()
        }));
        for (addrs, implicit_tls, key) in [
            (&pop3_config.listen, false, "listen"),
            (&pop3_config.tls_listen, true, "tls_listen"),
        ] {
            for addr in addrs {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("[pop3] {key}: cannot bind {addr}"))?;
                let proto = if implicit_tls { "pop3s" } else { "pop3" };
                tracing::info!("{proto} listening on {}", listener.local_addr()?);
                if !implicit_tls && serving.pop3.is_none() {
                    serving.pop3 = Some(listener.local_addr()?);
                }
                loops.spawn(crate::pop3::accept_loop(
                    listener,
                    ctx.clone(),
                    sessions.clone(),
                    implicit_tls,
                ));
            }
        }
    }
    if let Some(engine) = &sieve {
        let ctx = Arc::new(crate::sieve::managesieve::ManageSieveContext::new(
            store.clone(),
            engine.clone(),
            config.hostname.clone(),
            Some(tls.clone()),
            stopped.clone(),
            auth.clone(),
        ));
        crate::sieve::managesieve::start(ctx, &sessions, &mut loops).await?;
    }
    if let Some(http) = &config.http {
        let admin: Arc<dyn cove_sync::http::AdminHandler> = Arc::new(crate::admin::Admin {
            replicator: replicator.clone(),
            token: crate::privileges::as_owner(owner.as_ref(), || {
                crate::admin::admin_token(&config.data_dir)
            })?,
            auth: auth.clone(),
            imap: serving.imap,
            pop3: serving.pop3,
            auth_key: http.auth_key.clone(),
            smtp_relay: http.smtp_relay,
            auth_failure_delay: Duration::from_millis(
                config
                    .imap
                    .as_ref()
                    .map_or(2000, |i| i.auth_failure_delay_ms),
            ),
            draining: draining.clone(),
            users: users.clone(),
            cluster: cluster.clone(),
            drain_grace: Duration::from_secs(config.server.drain_grace_secs),
        });
        for addr in &http.listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("[http] listen: cannot bind {addr}"))?;
            tracing::info!(
                "http (metrics, sync admin) listening on {}",
                listener.local_addr()?
            );
            loops.spawn(cove_sync::http::serve_http(
                listener,
                admin.clone(),
                stopped.clone(),
            ));
        }
    }
    if let Some(owner) = &owner {
        crate::privileges::drop_to(owner)?;
    }
    tracing::info!(data_dir = %config.data_dir.display(), hostname = %config.hostname, "cove {} serving", env!("CARGO_PKG_VERSION"));

    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("install SIGHUP handler")?;
    let reloader = Arc::new(reloader);
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                // Reading files: off the reactor.
                let reloader = reloader.clone();
                let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
            }
        }
    }
    let _ = stop.send(true);
    while loops.join_next().await.is_some() {}

    let mut set = match sessions.lock() {
        Ok(mut s) => std::mem::take(&mut *s),
        Err(_) => JoinSet::new(),
    };
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    // The set still holds sessions that ended and were not reaped yet (the
    // accept loops reap only when they accept): count the open ones.
    while set.try_join_next().is_some() {}
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

/// The addresses this node serves each protocol on.
#[derive(Default)]
struct Serving {
    imap: Option<std::net::SocketAddr>,
    pop3: Option<std::net::SocketAddr>,
}

/// What a reload (SIGHUP) applies besides the protocol limits: the TLS
/// certificate, the log level, the trusted proxies (the cluster map
/// registers itself where it is made).
fn register_reloads(reloader: &crate::reload::Reloader, certificate: Arc<crate::tls::Certificate>) {
    reloader.register(Part::new(
        "tls certificate",
        |_| false,
        move |_| {
            Ok(certificate.reload()?.then(|| {
                format!(
                    "tls certificate (new chain from {})",
                    certificate.path().display()
                )
            }))
        },
    ));
    reloader.register(Part::new(
        "log level",
        |k| k == "server.log_level",
        |c| {
            Ok(crate::logging::set_level(&c.server.log_level)?
                .map(|change| format!("log level {change}")))
        },
    ));
    reloader.register(Part::new(
        "trusted proxies",
        |k| k == "trusted_proxies",
        |c| {
            crate::proxy::set_trusted(
                crate::proxy::TrustedProxies::parse(&c.trusted_proxies)
                    .map_err(anyhow::Error::msg)?,
            );
            Ok(None)
        },
    ));
}

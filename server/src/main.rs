//! cove: a replicated, deduplicating mailbox storage server. The command
//! line; everything else is in the library (server/src/lib.rs).

use cove::{cli, config, import, serve};

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use config::Config;

#[derive(Parser)]
#[command(
    name = "cove",
    version,
    about = "cove: mailbox storage server (LMTP in, Maildir, dedup)"
)]
struct Cli {
    /// The configuration file (TOML); also COVE_CONFIG. Without either,
    /// /etc/cove/cove.toml if it exists, else a single node on loopback with
    /// data in ./cove-data.
    #[arg(long, global = true, value_name = "FILE", env = "COVE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Show a user's mailboxes.
    Mailbox {
        #[command(subcommand)]
        command: MailboxCommand,
    },
    /// Maintain a user's index.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// The content-addressed blob store.
    Dedup {
        #[command(subcommand)]
        command: DedupCommand,
    },
    /// Replication with the peers (asks the running server over [http]).
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// A user's Sieve scripts (what ManageSieve manages).
    Sieve {
        #[command(subcommand)]
        command: SieveCommand,
    },
    /// Bring mail over from another server.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// This node's part in routing (asks the running server over [http]).
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Print a completion script for a shell (bash: `cove completions bash
    /// > /etc/bash_completion.d/cove`).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Take no new sessions: /health answers 503, so proxies and the other
    /// nodes send new sessions to the peer; after the grace, open IMAP and
    /// POP3 sessions are told to reconnect.
    Drain {
        /// Seconds before open sessions are sent away (default: [server]
        /// drain_grace_secs).
        #[arg(long, value_name = "SECS")]
        grace: Option<u64>,
    },
    /// Take new sessions again.
    Undrain,
}

#[derive(Subcommand)]
enum SieveCommand {
    /// List a user's scripts, marking the active one.
    List { email: String },
    /// Store a script (checked first) from FILE or standard input.
    Put {
        email: String,
        name: String,
        file: Option<PathBuf>,
        /// Make it the active script too.
        #[arg(long)]
        activate: bool,
    },
    /// Print a script.
    Get { email: String, name: String },
    /// Make a script the active one (`--none`: no script runs).
    Activate {
        email: String,
        #[arg(required_unless_present = "none")]
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        none: bool,
    },
    /// Delete a script (not the active one).
    Delete { email: String, name: String },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Import Dovecot Maildir++ trees, keeping UIDVALIDITY, UIDs, flags,
    /// keywords and subscriptions; running it again changes nothing.
    Maildir {
        /// The user to import into (with PATH).
        #[arg(
            long,
            value_name = "EMAIL",
            requires = "path",
            conflicts_with = "users"
        )]
        user: Option<String>,
        /// The user's Dovecot Maildir (holding cur/, new/ and the .Folder
        /// directories), read and never changed.
        #[arg(requires = "user")]
        path: Option<PathBuf>,
        /// Many users: a file of `EMAIL PATH` lines.
        #[arg(long, value_name = "FILE", required_unless_present = "user")]
        users: Option<PathBuf>,
        /// Add users that do not exist yet (without a password).
        #[arg(long)]
        create_users: bool,
    },
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Sync one user (or every user) with every peer now, and report what
    /// moved.
    Now { email: Option<String> },
    /// Each peer: connected or not, users queued, age of the oldest
    /// unsynced change, last error.
    Status {
        /// The status as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user (and their default mailboxes).
    Add {
        email: String,
        /// Read the password from the first line of standard input. Without
        /// it the user has no password: mail is delivered, login is refused.
        #[arg(long)]
        password_stdin: bool,
        /// Quota in bytes (0: none).
        #[arg(long, default_value_t = 0)]
        quota: u64,
        /// How many messages the user may hold (RFC 9208 MESSAGE; 0: none).
        /// Without it, `[server] default_message_quota` applies. Kept by
        /// this node only: give it on each node.
        #[arg(long)]
        messages: Option<u64>,
    },
    /// Remove a user; their mail is kept unless --purge.
    Del {
        email: String,
        #[arg(long)]
        purge: bool,
    },
    /// List users.
    List,
    /// Set a user's password.
    Passwd {
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Add or update users from a Dovecot passwd-file
    /// (`user:{SCHEME}hash:...`); their passwords keep working, and are
    /// rehashed to argon2id at each user's first login.
    Import {
        file: PathBuf,
        /// The domain of user names without one (`alice` → `alice@DOMAIN`).
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Subcommand)]
enum MailboxCommand {
    /// List a user's mailboxes with their counts (reconciling with the Maildir first).
    List { email: String },
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Recreate a user's index from their Maildir (the old one is kept aside).
    Rebuild { email: String },
}

#[derive(Subcommand)]
enum DedupCommand {
    /// How much is stored, and how much dedup saves.
    Stats,
    /// Remove blobs no message links to any more.
    Gc,
    /// Check every blob's content against its name.
    Verify,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "cove", &mut std::io::stdout());
        return Ok(());
    }
    let path = cli.config.or_else(|| {
        let default = PathBuf::from(config::DEFAULT_PATH);
        default.exists().then_some(default)
    });
    let config = Config::load(path.as_deref())?;
    // Every hash this process makes (user add, passwd, a rehash at login).
    cove::auth::set_hashing(config.auth.hashing()?);
    if !matches!(cli.command, Command::Serve) && !config.data_dir.is_dir() {
        // An admin command must act on the server's data, not on a new,
        // empty directory made wherever the shell stands.
        anyhow::bail!(
            "no data directory at {} ({}); start cove serve with this configuration first, or name the server's configuration with --config or COVE_CONFIG",
            config.data_dir.display(),
            match &path {
                Some(p) => format!("data_dir of {}", p.display()),
                None => format!(
                    "the default without a configuration file: no --config, no COVE_CONFIG, no {}",
                    config::DEFAULT_PATH
                ),
            }
        );
    }
    match &cli.command {
        Command::Serve => {}
        // They read files the data's owner may not be allowed to read (a
        // Dovecot Maildir, /etc/dovecot/users), and what root would write
        // into the data the server could not use.
        Command::Import { .. }
        | Command::User {
            command: UserCommand::Import { .. },
        } => cove::privileges::refuse_root_on_others_data(&config)?,
        _ => cove::privileges::become_data_owner(&config)?,
    }
    match cli.command {
        Command::Serve => {
            cove::logging::init(&config.server.log_level);
            // A bounded blocking pool: every blocking thread keeps a malloc arena
            // of its own, so 512 of them (tokio's default) after a burst of
            // logins or deliveries hold hundreds of MiB for good.
            // Sized for the lanes of crate::work (docs/architecture.md).
            let budget = config.server.blocking_budget()?;
            cove::work::configure(budget);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(budget.pool_threads())
                .build()?;
            runtime.block_on(serve::serve(config))
        }
        command => {
            cove::logging::init("warn");
            match command {
                Command::Serve | Command::Completions { .. } => unreachable!("handled above"),
                Command::User { command } => match command {
                    UserCommand::Add {
                        email,
                        password_stdin,
                        quota,
                        messages,
                    } => cli::user_add(
                        &config,
                        &email,
                        password_stdin,
                        cove_store::Quota {
                            bytes: quota,
                            messages: messages.unwrap_or(0),
                        },
                        messages.is_some(),
                    ),
                    UserCommand::Del { email, purge } => cli::user_del(&config, &email, purge),
                    UserCommand::List => cli::user_list(&config),
                    UserCommand::Passwd {
                        email,
                        password_stdin,
                    } => cli::user_passwd(&config, &email, password_stdin),
                    UserCommand::Import { file, domain } => {
                        cove::import::users::import_users(&config, &file, domain.as_deref())
                    }
                },
                Command::Mailbox {
                    command: MailboxCommand::List { email },
                } => cli::mailbox_list(&config, &email),
                Command::Index {
                    command: IndexCommand::Rebuild { email },
                } => cli::index_rebuild(&config, &email),
                Command::Dedup { command } => match command {
                    DedupCommand::Stats => cli::dedup_stats(&config),
                    DedupCommand::Gc => cli::dedup_gc(&config),
                    DedupCommand::Verify => cli::dedup_verify(&config),
                },
                Command::Node { command } => match command {
                    NodeCommand::Drain { grace } => cli::node_drain(&config, true, grace),
                    NodeCommand::Undrain => cli::node_drain(&config, false, None),
                },
                Command::Sieve { command } => match command {
                    SieveCommand::List { email } => cove::sieve::cli::list(&config, &email),
                    SieveCommand::Put {
                        email,
                        name,
                        file,
                        activate,
                    } => cove::sieve::cli::put(&config, &email, &name, file.as_deref(), activate),
                    SieveCommand::Get { email, name } => {
                        cove::sieve::cli::get(&config, &email, &name)
                    }
                    SieveCommand::Activate { email, name, .. } => {
                        cove::sieve::cli::activate(&config, &email, name.as_deref())
                    }
                    SieveCommand::Delete { email, name } => {
                        cove::sieve::cli::delete(&config, &email, &name)
                    }
                },
                Command::Sync { command } => match command {
                    SyncCommand::Now { email } => cli::sync_now(&config, email.as_deref()),
                    SyncCommand::Status { json } => cli::sync_status(&config, json),
                },
                Command::Import {
                    command:
                        ImportCommand::Maildir {
                            user,
                            path,
                            users,
                            create_users,
                        },
                } => {
                    let source = match (user, path, users) {
                        (Some(email), Some(path), None) => {
                            import::maildir::Source::One { email, path }
                        }
                        (None, None, Some(file)) => import::maildir::Source::List(file),
                        _ => anyhow::bail!("give either --user EMAIL PATH or --users FILE"),
                    };
                    import::maildir::run(&config, source, import::maildir::Options { create_users })
                }
            }
        }
    }
}

/// Keep glibc from holding on to large freed blocks. glibc raises its mmap
/// threshold each time a large mmapped block is freed, so after the first
/// login argon2's 19 MiB buffers come from the heap arenas, where they are
/// interleaved with long-lived session data and cannot be returned: the
/// IMAP idle benchmark measured about 200 KiB kept per connection (about
/// 1 MiB with fewer arenas). A fixed threshold turns the adjustment off: a
/// block of 128 KiB or more is always mmapped and unmapped when freed.
fn fix_malloc_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes two plain integers and only changes the
        // allocator's tuning; glibc documents it as MT-Safe. It is called
        // once, first thing in main, before any thread of ours exists. A
        // failure (return 0) leaves the defaults.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

fn main() -> ExitCode {
    fix_malloc_mmap_threshold();
    cove::private_files::set_umask();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Each cause once; a TOML error keeps its picture of the line.
            eprintln!("cove: {}", cove::error_text::chain(&e));
            ExitCode::FAILURE
        }
    }
}

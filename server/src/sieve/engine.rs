//! Running a user's scripts on one delivered message: the interpreter
//! (sieve-rs) asks questions and reports actions as events; this file
//! answers the questions from the store and turns the actions into a
//! [`Plan`] the delivery then carries out.
//!
//! # Rules kept here
//! - Mail is never lost to a script: a compile error, a run-time error
//!   (including the CPU limit, an include that is missing or loops) throws
//!   the whole plan away and the message is delivered as without a script,
//!   with a log line saying why.
//! - The scripts run in order: `[sieve] before`, the user's active script,
//!   `[sieve] after`. Their actions add up; the implicit keep happens
//!   unless a script cancelled it (fileinto, redirect, discard); a reject
//!   in any script rejects.
//! - Compiled scripts are cached by the blake3 hash of their text, so an
//!   edit takes effect at the next message and a thousand users with the
//!   same script share one compiled copy.
//! - Nothing here touches a socket: sending (vacation, redirect) is the
//!   caller's, after the plan is made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ::sieve::{Compiler, Envelope, Event, Input, Mailbox, Recipient, Runtime, Script, Sieve};
use cove_store::{DeliveryTarget, Flags, Placement, Store, User};
use mail_parser::{Message, MessageParser};

use super::SieveConfig;

/// Compiled scripts kept at most (then the cache starts over).
const CACHE_ENTRIES: usize = 4096;

/// A global script (before/after) with the name used in logs.
struct GlobalScript {
    name: String,
    script: Arc<Sieve>,
}

/// Compiler, runtime and the compiled-script cache, shared by all
/// deliveries.
pub struct SieveEngine {
    config: SieveConfig,
    compiler: Compiler,
    runtime: Runtime,
    cache: Mutex<HashMap<[u8; 32], Arc<Sieve>>>,
    before: Vec<GlobalScript>,
    after: Vec<GlobalScript>,
}

/// A message sent because of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub kind: OutgoingKind,
    pub to: String,
    /// The message; `None`: the delivered message as it is (redirect).
    pub message: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingKind {
    /// redirect (RFC 5228 §4.2): the original envelope sender stays.
    Redirect,
    /// vacation (RFC 5230): an empty return path, never to lists and the
    /// like.
    AutoReply,
    /// notify with mailto (RFC 5436): an empty return path, counted
    /// against the day's limit like a redirect.
    Notify,
}

/// One copy to store: where, and which bytes.
#[derive(Debug, Clone)]
pub struct Copy {
    pub placement: Placement,
    /// The message as editheader (RFC 5293) changed it; `None`: as it
    /// arrived (the delivery's one blob).
    pub content: Option<Arc<Vec<u8>>>,
}

/// What the scripts decided for one recipient.
#[derive(Debug, Default)]
pub struct Plan {
    /// Where copies go; empty with `discard` false means none was named
    /// (a script-less delivery).
    pub placements: Vec<Copy>,
    pub discard: bool,
    /// reject/ereject (RFC 5429): refuse this recipient with the reason.
    pub reject: Option<String>,
    pub outgoing: Vec<Outgoing>,
    /// Vacation and duplicate ids to remember once the message is stored,
    /// with their expiry (seconds since the epoch).
    pub track: Vec<(String, i64)>,
    /// Names of the scripts that ran, for the log.
    pub ran: Vec<String>,
}

/// The delivery a plan is made for.
pub struct Delivery<'a> {
    pub store: &'a Store,
    pub user: &'a User,
    /// `user+detail` mailbox, if the address had one.
    pub detail: Option<&'a str>,
    /// MAIL FROM (empty for a bounce).
    pub from: &'a str,
    /// RCPT TO as given.
    pub to: &'a str,
    pub now: i64,
}

/// Why a script could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("script {script} does not compile: {reason}")]
    Compile { script: String, reason: String },
    #[error("script {script} failed at run time: {reason}")]
    Runtime { script: String, reason: String },
    #[error("reading the scripts: {0}")]
    Store(#[from] cove_store::Error),
}

impl SieveEngine {
    /// Build the engine; the global scripts are read and compiled now, so a
    /// broken one stops the start with its file and line.
    pub fn new(config: &SieveConfig, hostname: &str) -> anyhow::Result<SieveEngine> {
        let compiler = Compiler::new()
            .with_max_script_size(config.max_script_size as usize)
            .with_max_includes(config.max_nested_includes.max(1) * 2);
        let runtime = Runtime::new()
            .with_cpu_limit(config.cpu_limit)
            .with_max_nested_includes(config.max_nested_includes)
            .with_max_redirects(config.max_redirects)
            .with_max_out_messages(config.max_redirects + 2)
            .with_local_hostname(hostname.to_string())
            .with_env_variable("name", "cove")
            .with_env_variable("version", env!("CARGO_PKG_VERSION"))
            .with_env_variable("phase", "during")
            .with_env_variable("domain", hostname.to_string())
            .with_env_variable("host", hostname.to_string());
        let mut engine = SieveEngine {
            config: config.clone(),
            compiler,
            runtime,
            cache: Mutex::new(HashMap::new()),
            before: Vec::new(),
            after: Vec::new(),
        };
        let load = |engine: &SieveEngine, paths: &[std::path::PathBuf]| {
            paths
                .iter()
                .map(|p| {
                    let text = std::fs::read(p)
                        .map_err(|e| anyhow::anyhow!("[sieve] cannot read {}: {e}", p.display()))?;
                    let script = engine
                        .compile(&text)
                        .map_err(|e| anyhow::anyhow!("[sieve] {}: {e}", p.display()))?;
                    Ok(GlobalScript {
                        name: p.display().to_string(),
                        script,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()
        };
        engine.before = load(&engine, &config.before)?;
        engine.after = load(&engine, &config.after)?;
        Ok(engine)
    }

    pub fn config(&self) -> &SieveConfig {
        &self.config
    }

    /// Whether any global script runs (then every delivery is filtered).
    pub fn has_global_scripts(&self) -> bool {
        !self.before.is_empty() || !self.after.is_empty()
    }

    /// Compile a script (cached by content). The error names the line and
    /// column (RFC 5804 §2.6: CHECKSCRIPT and PUTSCRIPT say what is wrong).
    pub fn compile(&self, text: &[u8]) -> Result<Arc<Sieve>, String> {
        let key = *blake3::hash(text).as_bytes();
        if let Some(s) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(s);
        }
        let script = self
            .compiler
            .compile(text)
            .map_err(|e| compile_error_text(text, &e))?;
        let script = Arc::new(script);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key, script.clone());
        }
        Ok(script)
    }

    /// Parse a message once for all its recipients.
    pub fn parse<'m>(&self, raw: &'m [u8]) -> Message<'m> {
        MessageParser::new().parse(raw).unwrap_or_else(|| Message {
            raw_message: raw.into(),
            ..Default::default()
        })
    }

    /// Run the scripts for one recipient. `Ok(None)`: no script applies.
    pub fn plan(&self, d: &Delivery, message: &Message) -> Result<Option<Plan>, RunError> {
        let scripts = d.store.sieve(&d.user.address);
        let personal = match scripts.active()? {
            Some((name, text)) => match self.compile(&text) {
                Ok(script) => Some((name, script)),
                // Stored scripts were checked when put; one that no longer
                // compiles (a newer interpreter) is left out, the global
                // scripts still run.
                Err(reason) if self.has_global_scripts() => {
                    tracing::warn!(user = %d.user.address, script = %name, reason = %reason,
                        "the active sieve script does not compile; running the global scripts only");
                    None
                }
                Err(reason) => {
                    return Err(RunError::Compile {
                        script: name,
                        reason,
                    });
                }
            },
            None => None,
        };
        if personal.is_none() && !self.has_global_scripts() {
            return Ok(None);
        }
        let mut plan = Plan::default();
        let mut keep: Option<Kept> = Some((Vec::new(), None));
        let chain = self
            .before
            .iter()
            .map(|g| (g.name.clone(), g.script.clone()))
            .chain(personal)
            .chain(
                self.after
                    .iter()
                    .map(|g| (g.name.clone(), g.script.clone())),
            );
        for (name, script) in chain {
            plan.ran.push(name.clone());
            let kept = self
                .run_one(d, message, &name, script, &mut plan)
                .map_err(|reason| RunError::Runtime {
                    script: name.clone(),
                    reason,
                })?;
            match kept {
                Some(k) if keep.is_some() => keep = Some(k),
                Some(_) => {}
                None => keep = None,
            }
            if plan.reject.is_some() {
                break;
            }
        }
        if plan.reject.is_some() {
            plan.placements.clear();
            plan.outgoing.retain(|o| o.kind == OutgoingKind::AutoReply);
        } else if let Some((flags, content)) = keep {
            plan.placements.push(Copy {
                placement: placement(d, d.detail, &flags, false),
                content,
            });
        } else if plan.placements.is_empty() {
            plan.discard = true;
        }
        // RFC 5228 §2.10.3: a mailbox named twice (keep and fileinto
        // "INBOX", or two fileintos) gets the message once.
        let mut seen = std::collections::HashSet::new();
        plan.placements.retain(|c| {
            seen.insert(
                c.placement
                    .target
                    .mailbox
                    .as_deref()
                    .unwrap_or("INBOX")
                    .to_lowercase(),
            )
        });
        Ok(Some(plan))
    }

    /// One script's events. Returns the flags of its keep (implicit or
    /// explicit), or `None` when it cancelled the keep.
    fn run_one(
        &self,
        d: &Delivery,
        message: &Message,
        name: &str,
        script: Arc<Sieve>,
        plan: &mut Plan,
    ) -> Result<Option<Kept>, String> {
        let user_address = d.user.address.to_string();
        let mut ctx = self
            .runtime
            .filter_parsed(message.clone())
            .with_envelope(Envelope::From, d.from)
            .with_envelope(Envelope::To, d.to)
            .with_user_address(user_address);
        let mut input = Input::script(name.to_string(), script);
        let mut keep = None;
        let mut created: HashMap<usize, Vec<u8>> = HashMap::new();
        let scripts = d.store.sieve(&d.user.address);
        while let Some(result) = ctx.run(input) {
            input = Input::True;
            let event = result.map_err(|e| format!("{e:?}"))?;
            match event {
                Event::IncludeScript { name, optional } => {
                    let text = match &name {
                        Script::Personal(n) => scripts.get(n).ok(),
                        Script::Global(n) => self.global_script(n),
                    };
                    input = match text {
                        Some(text) => Input::script(name.clone(), self.compile(&text)?),
                        None if optional => Input::False,
                        None => return Err(format!("include {name:?}: no such script")),
                    };
                }
                Event::MailboxExists { mailboxes, .. } => {
                    let account = d.store.account(d.user).map_err(|e| e.to_string())?;
                    let all = mailboxes.iter().all(|m| match m {
                        Mailbox::Name(n) => account.mailbox_loosely(n).ok().flatten().is_some(),
                        Mailbox::Id(_) => false,
                    });
                    input = all.into();
                }
                Event::DuplicateId { id, expiry, .. } => {
                    let expiry = if id.starts_with("_v") {
                        expiry.max(self.config.min_vacation_period_secs)
                    } else {
                        expiry
                    };
                    let seen = scripts.tracked(&id, d.now).map_err(|e| e.to_string())?;
                    if !seen {
                        plan.track.push((id, d.now + expiry as i64));
                    }
                    input = seen.into();
                }
                Event::ListContains { .. } => input = Input::False,
                Event::Function { .. } => {
                    input = Input::result(::sieve::runtime::Variable::default())
                }
                Event::SetEnvelope { .. } => {}
                Event::Keep { flags, message_id } => {
                    keep = Some((flags, changed(&created, message_id)));
                }
                Event::Discard => {}
                Event::Reject { reason, .. } => plan.reject = Some(reason),
                Event::FileInto {
                    folder,
                    flags,
                    create,
                    message_id,
                    ..
                } => plan.placements.push(Copy {
                    placement: placement(d, Some(&folder), &flags, create),
                    content: changed(&created, message_id),
                }),
                Event::SendMessage {
                    recipient,
                    message_id,
                    ..
                } => {
                    let body = created.get(&message_id).cloned();
                    let kind = match body.as_deref().and_then(auto_submitted) {
                        Some(v) if v.eq_ignore_ascii_case("auto-notified") => OutgoingKind::Notify,
                        Some(_) => OutgoingKind::AutoReply,
                        None => OutgoingKind::Redirect,
                    };
                    let to = match recipient {
                        Recipient::Address(a) | Recipient::List(a) => vec![a],
                        Recipient::Group(g) => g,
                    };
                    for to in to {
                        plan.outgoing.push(Outgoing {
                            kind,
                            to,
                            message: body.clone(),
                        });
                    }
                }
                Event::Notify { method, .. } => {
                    tracing::info!(user = %d.user.address, method = ?method, "sieve notify: only mailto is supported; ignored");
                }
                Event::CreatedMessage {
                    message_id,
                    message,
                } => {
                    created.insert(message_id, message);
                }
            }
        }
        Ok(keep)
    }

    /// A script for `include :global` from `[sieve] global_dir`.
    fn global_script(&self, name: &str) -> Option<Vec<u8>> {
        let dir = self.config.global_dir.as_ref()?;
        cove_store::sieve::check_script_name(name).ok()?;
        std::fs::read(dir.join(format!("{name}.sieve")))
            .or_else(|_| std::fs::read(dir.join(name)))
            .ok()
    }
}

/// A compile error as a user reads it: `line N: what`. sieve-rs gives
/// some errors (an unknown command) without a position; then the line is
/// the first that holds the token the error names.
fn compile_error_text(text: &[u8], e: &::sieve::compiler::CompileError) -> String {
    let what = e.to_string();
    let what = what
        .rsplit_once(" at line ")
        .map_or(what.as_str(), |(w, _)| w)
        .trim_end_matches('.')
        .to_string();
    let line = if e.line_num() > 0 {
        Some(e.line_num())
    } else {
        what.split_once("found \"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(token, _)| token)
            .filter(|t| !t.is_empty())
            .and_then(|token| {
                String::from_utf8_lossy(text)
                    .lines()
                    .position(|l| l.contains(token))
                    .map(|i| i + 1)
            })
    };
    match line {
        Some(n) => format!("line {n}: {what}"),
        None => what,
    }
}

/// A keep's flags and, when editheader changed the message, its bytes.
type Kept = (Vec<String>, Option<Arc<Vec<u8>>>);

/// The changed message a keep or fileinto names (`message_id` 0: the one
/// that arrived).
fn changed(created: &HashMap<usize, Vec<u8>>, message_id: usize) -> Option<Arc<Vec<u8>>> {
    (message_id > 0)
        .then(|| created.get(&message_id))
        .flatten()
        .map(|b| Arc::new(b.clone()))
}

/// The `Auto-Submitted` value of a message the interpreter made (RFC 3834:
/// `auto-replied` for vacation, `auto-notified` for notify), if any.
fn auto_submitted(message: &[u8]) -> Option<String> {
    let head_end = memchr::memmem::find(message, b"\r\n\r\n").unwrap_or(message.len());
    message[..head_end]
        .split(|b| *b == b'\n')
        .find(|l| l.len() > 15 && l[..15].eq_ignore_ascii_case(b"auto-submitted:"))
        .map(|l| String::from_utf8_lossy(&l[15..]).trim().to_string())
}

/// A copy for `mailbox` (None: INBOX) with IMAP flags from imap4flags.
fn placement(d: &Delivery, mailbox: Option<&str>, flags: &[String], create: bool) -> Placement {
    let mut system = Flags::empty();
    let mut keywords = Vec::new();
    for f in flags.iter().flat_map(|f| f.split_whitespace()) {
        match f.to_ascii_lowercase().as_str() {
            "\\seen" => system.insert(Flags::SEEN),
            "\\answered" => system.insert(Flags::ANSWERED),
            "\\flagged" => system.insert(Flags::FLAGGED),
            "\\deleted" => system.insert(Flags::DELETED),
            "\\draft" => system.insert(Flags::DRAFT),
            _ if f.starts_with('\\') => {}
            _ => keywords.push(f.to_string()),
        }
    }
    let mailbox = mailbox
        .filter(|m| !m.eq_ignore_ascii_case("INBOX"))
        .map(str::to_string);
    Placement {
        target: DeliveryTarget {
            user: d.user.clone(),
            mailbox,
        },
        flags: system,
        keywords,
        create,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> SieveEngine {
        SieveEngine::new(&SieveConfig::default(), "test").expect("engine")
    }

    #[test]
    fn compile_errors_name_the_line() {
        let e = engine();
        for (script, line) in [
            ("keep;\nfrobnicate;\n", "line 2:"),
            ("require \"fileinto\";\n\nfileinto 1;\n", "line 3"),
            ("keep;\nif true {\n", "line "),
            ("fileinto \"x\";\n", "line 1"),
        ] {
            let err = e.compile(script.as_bytes()).unwrap_err();
            assert!(err.starts_with(line), "{script:?}: {err}");
        }
        assert!(e.compile(b"require \"vacation\"; vacation \"x\";").is_ok());
    }
}

//! RFC 3501 §6.3.8 LIST and §6.3.9 LSUB, with RFC 5258 LIST-EXTENDED
//! selection and return options, RFC 5819 LIST-STATUS, RFC 3348 CHILDREN and
//! RFC 6154 SPECIAL-USE attributes.
//!
//! The whole answer is computed on the blocking pool (under the user's
//! budget, see `crate::work`): a user may have thousands of mailboxes and
//! send several patterns, and nothing proportional to either runs on the
//! reactor. Lookups go through sorted sets and maps, so an answer costs
//! O(N log N) for N names plus the pattern matching (linear per name, see
//! `list_pattern`).

use std::collections::{BTreeSet, HashMap, HashSet};

use cove_store::{MailboxInfo, MailboxStatus};

use super::connection::{Authed, Connection};
use super::extended::ListOptions;
use super::list_pattern::ListPattern;
use super::outcome::Outcome;
use super::revision::Revision;
use super::status::status_items;

// RFC 3501 §6.3.8 LIST, §6.3.9 LSUB; RFC 5258 LIST-EXTENDED.
// `plain`: the RFC 3501 form, without LIST-EXTENDED options.
pub async fn list(
    conn: &mut Connection,
    user: &Authed,
    opts: ListOptions,
    lsub: bool,
    plain: bool,
) -> Outcome {
    if plain && !lsub && opts.patterns.iter().all(String::is_empty) {
        // RFC 3501 §6.3.8: the hierarchy delimiter and root.
        conn.untagged("LIST (\\Noselect) \".\" \"\"");
        return Outcome::ok("LIST completed");
    }
    let account = user.account();
    let word = if lsub { "LSUB" } else { "LIST" };
    let rev = conn.enabled.revision;
    let listed = user
        .blocking(move || {
            let statuses = if opts.return_status.is_empty() {
                Vec::new()
            } else {
                account.mailbox_status_all()?
            };
            let listing = Listing {
                mailboxes: account.mailboxes()?,
                subscriptions: account.subscriptions()?,
                statuses,
            };
            Ok(listing.render(&opts, lsub, rev))
        })
        .await;
    match listed {
        Ok(lines) => {
            conn.out.extend_from_slice(&lines);
            Outcome::ok(format!("{word} completed"))
        }
        Err(e) => conn.refuse(&e),
    }
}

/// What a LIST answer is made from.
struct Listing {
    mailboxes: Vec<MailboxInfo>,
    subscriptions: Vec<String>,
    statuses: Vec<(MailboxInfo, MailboxStatus)>,
}

impl Listing {
    /// The untagged lines of the answer.
    /// Patterns match names as `rev` shows them (UTF-8 in IMAP4rev2).
    fn render(&self, opts: &ListOptions, lsub: bool, rev: Revision) -> Vec<u8> {
        let word = if lsub { "LSUB" } else { "LIST" };
        let by_name: HashMap<&str, &MailboxInfo> = self
            .mailboxes
            .iter()
            .map(|m| (m.name.as_str(), m))
            .collect();
        let existing: BTreeSet<&str> = by_name.keys().copied().collect();
        let subscribed: HashSet<&str> = self.subscriptions.iter().map(String::as_str).collect();
        let statuses: HashMap<&str, &(MailboxInfo, MailboxStatus)> = self
            .statuses
            .iter()
            .map(|s| (s.0.name.as_str(), s))
            .collect();
        let by_subscription = lsub || opts.subscribed;
        let names: BTreeSet<&str> = if by_subscription {
            subscribed.iter().copied().collect()
        } else {
            existing.clone()
        };
        let patterns: Vec<(ListPattern, ListPattern)> = opts
            .patterns
            .iter()
            .map(|p| {
                let full = format!("{}{p}", opts.reference);
                let inbox = full.to_ascii_uppercase();
                (
                    ListPattern::new(full.as_bytes()),
                    ListPattern::new(inbox.as_bytes()),
                )
            })
            .collect();
        let matched = |name: &str| {
            let shown = rev.shown_name(name);
            patterns.iter().any(|(full, inbox)| {
                if name == "INBOX" {
                    inbox.matches(b"INBOX")
                } else {
                    full.matches(shown.as_bytes())
                }
            })
        };
        // Hierarchy levels that exist only as part of longer names
        // (RFC 3501 §6.3.4's example after DELETE, §6.3.9's LSUB with %):
        // listed with \Noselect where the pattern reaches them.
        let mut implied: BTreeSet<&str> = BTreeSet::new();
        for name in &names {
            for (i, _) in name.match_indices('.') {
                let parent = &name[..i];
                if !names.contains(parent) {
                    implied.insert(parent);
                }
            }
        }
        let mut entries: Vec<(&str, bool)> = names.iter().map(|n| (*n, false)).collect();
        entries.extend(implied.iter().map(|n| (*n, true)));
        entries.sort_unstable();
        // RFC 5258 §3.5: with (SUBSCRIBED RECURSIVEMATCH), a name with a
        // subscribed name below it says so in CHILDINFO, and a parent that is
        // not subscribed itself is listed for them where the pattern stops
        // at its level (as Dovecot answers).
        let childinfo = opts.subscribed && opts.recursive_match && !lsub;
        let extra = |name: &str| {
            if childinfo && has_children(&names, name) {
                " (\"CHILDINFO\" (\"SUBSCRIBED\"))"
            } else {
                ""
            }
        };
        let mut out = Vec::new();
        for (name, is_implied) in entries {
            if !matched(name) {
                continue;
            }
            if is_implied {
                if opts.special_use || (opts.subscribed && !lsub && !childinfo) {
                    continue;
                }
                let prefix = format!("{name}.");
                // Only where the pattern stops at this level: `%` reaches it,
                // `*` reaches the real names below it instead.
                let below = names
                    .range(prefix.as_str()..)
                    .take_while(|n| n.starts_with(&prefix));
                if below.clone().any(|n| matched(n)) {
                    continue;
                }
                if childinfo {
                    // Listed below like any name, without \Subscribed.
                    let attrs = attributes(by_name.get(name).copied(), name, &existing);
                    line(&mut out, word, &attrs.join(" "), name, extra(name), rev);
                    continue;
                }
                let attrs = if lsub {
                    "\\Noselect"
                } else if has_children(&existing, name) {
                    "\\Noselect \\HasChildren"
                } else {
                    "\\Noselect \\HasNoChildren"
                };
                line(&mut out, word, attrs, name, "", rev);
                continue;
            }
            let mb = by_name.get(name);
            if opts.special_use && mb.and_then(|m| m.special_use.as_ref()).is_none() {
                continue;
            }
            let mut attrs = match mb {
                None if lsub => vec!["\\Noselect"],
                _ => attributes(mb.copied(), name, &existing),
            };
            if !lsub && (opts.subscribed || opts.return_subscribed) && subscribed.contains(name) {
                attrs.push("\\Subscribed");
            }
            line(&mut out, word, &attrs.join(" "), name, extra(name), rev);
            if let Some((info, st)) = statuses.get(name) {
                let items = status_items(info, st, &opts.return_status, rev);
                out.extend_from_slice(b"* STATUS ");
                rev.write_name(&mut out, name);
                out.extend_from_slice(format!(" ({items})\r\n").as_bytes());
            }
        }
        out
    }
}

/// Whether `set` holds a name below `name`.
fn has_children(set: &BTreeSet<&str>, name: &str) -> bool {
    let prefix = format!("{name}.");
    set.range(prefix.as_str()..)
        .next()
        .is_some_and(|n| n.starts_with(&prefix))
}

/// A LIST name's attributes: \NonExistent, or RFC 3348's \HasChildren /
/// \HasNoChildren and RFC 6154's special use.
fn attributes<'a>(
    mb: Option<&'a MailboxInfo>,
    name: &str,
    existing: &BTreeSet<&str>,
) -> Vec<&'a str> {
    let Some(mb) = mb else {
        return vec!["\\NonExistent"];
    };
    let children = if has_children(existing, name) {
        "\\HasChildren"
    } else {
        "\\HasNoChildren"
    };
    let mut attrs = vec![children];
    attrs.extend(mb.special_use.as_deref());
    attrs
}

/// `* LIST (attrs) "." name`, then `extra` (RFC 5258 extended data).
pub(super) fn line(
    out: &mut Vec<u8>,
    word: &str,
    attrs: &str,
    name: &str,
    extra: &str,
    rev: Revision,
) {
    out.extend_from_slice(format!("* {word} ({attrs}) \".\" ").as_bytes());
    rev.write_name(out, name);
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(b"\r\n");
}

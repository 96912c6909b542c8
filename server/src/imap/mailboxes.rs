//! RFC 3501 §6.3 (authenticated state) and the selected-state commands that
//! end a selection: SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE,
//! UNSUBSCRIBE, LIST, LSUB, STATUS, APPEND; CLOSE, UNSELECT, EXPUNGE; IDLE;
//! and the announcements of other sessions' changes.

use std::sync::Arc;
use std::time::Duration;

use cove_store::{Account, Error, Flags, MailboxInfo, MailboxStatus, NewMessage, Uid};
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::sequence::SequenceSet;
use imap_codec::imap_types::status::StatusDataItemName;

use super::extended::ListOptions;
use super::response;
use super::session::{Append, Authed, Outcome, Session, State};
use super::view::{PendingRead, View};

/// How a store error is told to an IMAP client (RFC 5530 response codes).
/// The one mapping for IMAP.
pub fn outcome_for(e: &Error) -> Outcome {
    match e {
        Error::NotFound(what) => Outcome::No(format!("[NONEXISTENT] {what} does not exist")),
        Error::AlreadyExists(what) => Outcome::No(format!("[ALREADYEXISTS] {what} already exists")),
        Error::OverQuota { .. } => Outcome::No("[OVERQUOTA] Quota exceeded".into()),
        Error::TooBig { limit, .. } => Outcome::No(format!(
            "[TOOBIG] Message exceeds the limit of {limit} bytes"
        )),
        Error::InUse(what) => Outcome::No(format!("[INUSE] {what} is in use")),
        Error::Expunged => Outcome::No("[EXPUNGEISSUED] Message was expunged".into()),
        Error::InvalidData(why) => Outcome::No(format!("[CANNOT] {why}")),
        Error::NoSpace(why) => {
            tracing::error!(error = %why, "imap: no space left on the data directory's disk");
            Outcome::No("[UNAVAILABLE] The server's disk is full, try again later".into())
        }
        Error::Busy(_) | Error::Io { .. } | Error::Index(_) | Error::Blob(_) => {
            // What the client is not told, the log says.
            tracing::error!(error = %e, "imap: store failure");
            Outcome::No("[UNAVAILABLE] Temporary failure, try again later".into())
        }
    }
}

/// Run blocking store work off the reactor.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> cove_store::Result<T> + Send + 'static,
) -> cove_store::Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(Error::Index(format!("store task failed: {e}"))),
    }
}

/// Does `name` match a LIST pattern (RFC 3501 §6.3.8: `*` matches
/// anything, `%` anything but the hierarchy delimiter)?
pub fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| matches(rest, &name[i..])),
        Some((b'%', rest)) => (0..=name.len())
            .take_while(|i| *i == 0 || name[i - 1] != b'.')
            .any(|i| matches(rest, &name[i..])),
        Some((c, rest)) => name.first().is_some_and(|n| n == c) && matches(rest, &name[1..]),
    }
}

impl Session {
    pub fn account(&self) -> Option<Arc<Account>> {
        match &self.state {
            State::Authenticated(a) | State::Selected(a, _) => Some(a.account.clone()),
            _ => None,
        }
    }

    /// Leave the selected state (if any), keeping the login.
    fn deselect(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Logout);
        self.state = match state {
            State::Selected(a, _) | State::Authenticated(a) => State::Authenticated(a),
            other => other,
        };
    }

    fn authed(&mut self) -> Option<Authed> {
        match std::mem::replace(&mut self.state, State::Logout) {
            State::Selected(a, _) | State::Authenticated(a) => Some(a),
            other => {
                self.state = other;
                None
            }
        }
    }

    // RFC 3501 §6.3.1 SELECT, §6.3.2 EXAMINE.
    pub async fn select(&mut self, name: String, read_only: bool) -> Outcome {
        let Some(account) = self.account() else {
            return Outcome::Bad("Log in first".into());
        };
        // A failed SELECT leaves no mailbox selected (RFC 3501 §6.3.1).
        self.deselect();
        let store = self.ctx.store.clone();
        let opened = blocking(move || {
            let mb = account.mailbox(&name)?;
            let watch = store.watcher().watch(&account);
            View::open(&account, mb, read_only, watch)
        })
        .await;
        let view = match opened {
            Ok(v) => v,
            Err(e) => return outcome_for(&e),
        };
        let mut keywords: Vec<&str> = view
            .messages
            .iter()
            .flat_map(|m| m.keywords.iter().map(String::as_str))
            .collect();
        keywords.sort_unstable();
        keywords.dedup();
        let system = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";
        let extra: String = keywords.iter().map(|k| format!(" {k}")).collect();
        self.untagged(&format!("FLAGS ({system}{extra})"));
        if read_only {
            self.untagged("OK [PERMANENTFLAGS ()] Read-only mailbox");
        } else {
            self.untagged(&format!(
                "OK [PERMANENTFLAGS ({system}{extra} \\*)] Flags permitted"
            ));
        }
        self.untagged(&format!("{} EXISTS", view.exists()));
        self.untagged(&format!("{} RECENT", view.recent.len()));
        if let Some(i) = view
            .messages
            .iter()
            .position(|m| !m.flags.contains(Flags::SEEN))
        {
            self.untagged(&format!("OK [UNSEEN {}] First unseen", i + 1));
        }
        self.untagged(&format!(
            "OK [UIDVALIDITY {}] UIDs valid",
            view.mailbox.uidvalidity
        ));
        self.untagged(&format!(
            "OK [UIDNEXT {}] Predicted next UID",
            view.uid_next()
        ));
        if let Some(a) = self.authed() {
            self.state = State::Selected(a, Box::new(view));
        }
        if read_only {
            Outcome::Ok("[READ-ONLY] EXAMINE completed".into())
        } else {
            Outcome::Ok("[READ-WRITE] SELECT completed".into())
        }
    }

    // RFC 3501 §6.3.3 CREATE (a trailing delimiter is dropped).
    pub async fn create(&mut self, name: String) -> Outcome {
        let Some(account) = self.account() else {
            return Outcome::Bad("Log in first".into());
        };
        let name = name.trim_end_matches('.').to_string();
        if name.eq_ignore_ascii_case("INBOX") {
            return Outcome::No("[ALREADYEXISTS] INBOX always exists".into());
        }
        let r = blocking(move || {
            // Superior hierarchy levels are created too.
            let parts: Vec<&str> = name.split('.').collect();
            for i in 1..parts.len() {
                let parent = parts[..i].join(".");
                match account.create_mailbox(&parent, None) {
                    Ok(_) | Err(Error::AlreadyExists(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            account.create_mailbox(&name, None)
        })
        .await;
        match r {
            Ok(_) => Outcome::Ok("CREATE completed".into()),
            Err(e) => outcome_for(&e),
        }
    }

    // RFC 3501 §6.3.4 DELETE.
    pub async fn delete(&mut self, name: String) -> Outcome {
        let Some(account) = self.account() else {
            return Outcome::Bad("Log in first".into());
        };
        if name.eq_ignore_ascii_case("INBOX") {
            return Outcome::No("[CANNOT] INBOX cannot be deleted".into());
        }
        if let State::Selected(_, view) = &self.state
            && view.mailbox.name == name
        {
            self.deselect();
        }
        match blocking(move || account.delete_mailbox(&name)).await {
            Ok(()) => Outcome::Ok("DELETE completed".into()),
            Err(e) => outcome_for(&e),
        }
    }

    // RFC 3501 §6.3.5 RENAME.
    pub async fn rename(&mut self, from: String, to: String) -> Outcome {
        let Some(account) = self.account() else {
            return Outcome::Bad("Log in first".into());
        };
        match blocking(move || account.rename_mailbox(&from, &to)).await {
            Ok(()) => Outcome::Ok("RENAME completed".into()),
            Err(e) => outcome_for(&e),
        }
    }

    // RFC 3501 §6.3.6 SUBSCRIBE, §6.3.7 UNSUBSCRIBE.
    pub async fn subscribe(&mut self, name: String, on: bool) -> Outcome {
        let Some(account) = self.account() else {
            return Outcome::Bad("Log in first".into());
        };
        match blocking(move || account.set_subscribed(&name, on)).await {
            Ok(()) => Outcome::Ok(
                if on {
                    "SUBSCRIBE completed"
                } else {
                    "UNSUBSCRIBE completed"
                }
                .into(),
            ),
            Err(e) => outcome_for(&e),
        }
    }

    // RFC 3501 §6.3.8 LIST, §6.3.9 LSUB.
    pub async fn list(&mut self, reference: String, pattern: String, lsub: bool) -> Outcome {
        if pattern.is_empty() && !lsub {
            // RFC 3501 §6.3.8: the hierarchy delimiter and root.
            self.untagged("LIST (\\Noselect) \".\" \"\"");
            return Outcome::Ok("LIST completed".into());
        }
        let options = ListOptions {
            reference,
            patterns: vec![pattern],
            ..ListOptions::default()
        };
        self.list_mailboxes(options, lsub).await
    }

    /// LIST and LSUB with RFC 5258 LIST-EXTENDED selection and return
    /// options, RFC 5819 LIST-STATUS, RFC 3348 CHILDREN and RFC 6154
    /// SPECIAL-USE attributes.
    pub async fn list_mailboxes(&mut self, opts: ListOptions, lsub: bool) -> Outcome {
        let Some(account) = self.account() else {
            return Outcome::Bad("Log in first".into());
        };
        let word = if lsub { "LSUB" } else { "LIST" };
        let want_status = !opts.return_status.is_empty();
        let listed = blocking(move || {
            let statuses = if want_status {
                account.mailbox_status_all()?
            } else {
                Vec::new()
            };
            Ok((account.mailboxes()?, account.subscriptions()?, statuses))
        })
        .await;
        let (mailboxes, subscriptions, statuses) = match listed {
            Ok(x) => x,
            Err(e) => return outcome_for(&e),
        };
        let subscribed = |name: &str| subscriptions.iter().any(|s| s == name);
        let by_subscription = lsub || opts.subscribed;
        let mut names: Vec<String> = if by_subscription {
            subscriptions.clone()
        } else {
            mailboxes.iter().map(|m| m.name.clone()).collect()
        };
        names.sort();
        names.dedup();
        let patterns: Vec<String> = opts
            .patterns
            .iter()
            .map(|p| format!("{}{p}", opts.reference))
            .collect();
        let matched = |name: &str| {
            patterns.iter().any(|full| {
                if name == "INBOX" {
                    matches(full.to_ascii_uppercase().as_bytes(), b"INBOX")
                } else {
                    matches(full.as_bytes(), name.as_bytes())
                }
            })
        };
        // Hierarchy levels that exist only as part of longer names
        // (RFC 3501 §6.3.4's example after DELETE, §6.3.9's LSUB with %):
        // listed with \Noselect where the pattern reaches them.
        let mut implied: Vec<String> = Vec::new();
        for name in &names {
            let parts: Vec<&str> = name.split('.').collect();
            for i in 1..parts.len() {
                let parent = parts[..i].join(".");
                if !names.contains(&parent) && !implied.contains(&parent) {
                    implied.push(parent);
                }
            }
        }
        let mut entries: Vec<(String, bool)> = names.iter().map(|n| (n.clone(), false)).collect();
        entries.extend(implied.into_iter().map(|n| (n, true)));
        entries.sort();
        for (name, is_implied) in entries {
            if !matched(&name) {
                continue;
            }
            if is_implied {
                if opts.special_use || (opts.subscribed && !lsub) {
                    continue;
                }
                let prefix = format!("{name}.");
                // Only where the pattern stops at this level: `%` reaches it,
                // `*` reaches the real names below it instead.
                if names.iter().any(|n| n.starts_with(&prefix) && matched(n)) {
                    continue;
                }
                let attrs = if lsub {
                    "\\Noselect"
                } else if mailboxes.iter().any(|m| m.name.starts_with(&prefix)) {
                    "\\Noselect \\HasChildren"
                } else {
                    "\\Noselect \\HasNoChildren"
                };
                let mut line = format!("* {word} ({attrs}) \".\" ").into_bytes();
                response::mailbox(&mut line, &name);
                line.extend_from_slice(b"\r\n");
                self.out.extend_from_slice(&line);
                continue;
            }
            let mb = mailboxes.iter().find(|m| m.name == name);
            if opts.special_use && mb.and_then(|m| m.special_use.as_ref()).is_none() {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            match mb {
                None if lsub => attrs.push("\\Noselect"),
                None => attrs.push("\\NonExistent"),
                Some(mb) => {
                    let prefix = format!("{name}.");
                    if mailboxes.iter().any(|m| m.name.starts_with(&prefix)) {
                        attrs.push("\\HasChildren");
                    } else {
                        attrs.push("\\HasNoChildren");
                    }
                    if let Some(su) = &mb.special_use {
                        attrs.push(su);
                    }
                }
            }
            if !lsub && (opts.subscribed || opts.return_subscribed) && subscribed(&name) {
                attrs.push("\\Subscribed");
            }
            let mut line = format!("* {word} ({}) \".\" ", attrs.join(" ")).into_bytes();
            response::mailbox(&mut line, &name);
            line.extend_from_slice(b"\r\n");
            self.out.extend_from_slice(&line);
            if let Some((info, st)) = statuses.iter().find(|(m, _)| m.name == name) {
                let items = status_items(info, st, &opts.return_status);
                let mut line = b"* STATUS ".to_vec();
                response::mailbox(&mut line, &name);
                line.extend_from_slice(format!(" ({items})\r\n").as_bytes());
                self.out.extend_from_slice(&line);
            }
        }
        Outcome::Ok(format!("{word} completed"))
    }

    // RFC 6154 §3: CREATE-SPECIAL-USE.
    pub async fn create_special_use(&mut self, name: String, uses: Vec<String>) -> Outcome {
        let Some(account) = self.account() else {
            return Outcome::Bad("Log in first".into());
        };
        const KNOWN: [&str; 7] = [
            "\\All",
            "\\Archive",
            "\\Drafts",
            "\\Flagged",
            "\\Junk",
            "\\Sent",
            "\\Trash",
        ];
        let mut canonical = Vec::new();
        for u in &uses {
            match KNOWN.iter().find(|k| k.eq_ignore_ascii_case(u)) {
                Some(k) => canonical.push(*k),
                None => {
                    return Outcome::No(format!(
                        "[USEATTR] {u} is not a special use cove supports"
                    ));
                }
            }
        }
        if canonical.len() > 1 {
            return Outcome::No("[USEATTR] One special use per mailbox".into());
        }
        let special_use = canonical.first().map(|s| s.to_string());
        let r = blocking(move || account.create_mailbox(&name, special_use.as_deref())).await;
        match r {
            Ok(_) => Outcome::Ok("CREATE completed".into()),
            Err(e) => outcome_for(&e),
        }
    }

    // RFC 3501 §6.3.10 STATUS.
    pub async fn status(&mut self, name: String, items: &[StatusDataItemName]) -> Outcome {
        let Some(account) = self.account() else {
            return Outcome::Bad("Log in first".into());
        };
        let got = blocking(move || {
            let mb = account.mailbox(&name)?;
            let st = account.status(&mb.guid)?;
            Ok((mb, st))
        })
        .await;
        let (mb, st): (MailboxInfo, MailboxStatus) = match got {
            Ok(x) => x,
            Err(e) => return outcome_for(&e),
        };
        let parts = status_items(&mb, &st, items);
        let mut line = b"* STATUS ".to_vec();
        response::mailbox(&mut line, &mb.name);
        line.extend_from_slice(format!(" ({parts})\r\n").as_bytes());
        self.out.extend_from_slice(&line);
        Outcome::Ok("STATUS completed".into())
    }

    // RFC 3501 §6.3.11 APPEND; RFC 4315 APPENDUID.
    pub async fn append(&mut self, append: Append, buf: Vec<u8>) -> Outcome {
        let (Some(account), quota) = (self.account(), self.quota()) else {
            return Outcome::Bad("Log in first".into());
        };
        let Append {
            mailbox: name,
            flags,
            date,
            message,
        } = append;
        let (system, keywords) = split_flags(&flags);
        let internal_date = date.map(|d| d.as_ref().timestamp());
        let store = self.ctx.store.clone();
        let r = blocking(move || {
            let mb = match account.mailbox(&name) {
                Ok(mb) => mb,
                Err(Error::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let bytes = buf
                .get(message)
                .ok_or_else(|| Error::InvalidData("APPEND literal out of range".into()))?;
            let blob = store.blobs().put(bytes)?;
            let msg = NewMessage {
                flags: system,
                keywords,
                internal_date,
                quota: Some(quota),
            };
            account.deliver(&mb.name, &blob, &msg).map(Some)
        })
        .await;
        let outcome = match r {
            Ok(Some(d)) => Outcome::Ok(format!(
                "[APPENDUID {} {}] APPEND completed",
                d.uidvalidity, d.uid
            )),
            Ok(None) => Outcome::No("[TRYCREATE] No such mailbox".into()),
            Err(e) => outcome_for(&e),
        };
        self.announce(true).await;
        outcome
    }

    pub fn quota(&self) -> u64 {
        match &self.state {
            State::Authenticated(a) | State::Selected(a, _) => a.user.quota,
            _ => 0,
        }
    }

    // RFC 3501 §6.4.2 CLOSE (expunges silently), RFC 3691 UNSELECT.
    pub async fn close(&mut self, expunge: bool) -> Outcome {
        if expunge
            && let State::Selected(a, view) = &self.state
            && !view.read_only
        {
            let account = a.account.clone();
            let guid = view.mailbox.guid;
            let deleted: Vec<Uid> = view
                .messages
                .iter()
                .filter(|m| m.flags.contains(Flags::DELETED))
                .map(|m| m.uid)
                .collect();
            if !deleted.is_empty()
                && let Err(e) = blocking(move || account.expunge(&guid, &deleted)).await
            {
                return outcome_for(&e);
            }
        }
        self.deselect();
        Outcome::Ok(
            if expunge {
                "CLOSE completed"
            } else {
                "UNSELECT completed"
            }
            .into(),
        )
    }

    // RFC 3501 §6.4.3 EXPUNGE, RFC 4315 UID EXPUNGE.
    pub async fn expunge(&mut self, only: Option<SequenceSet>) -> Outcome {
        let State::Selected(a, view) = &self.state else {
            return Outcome::Bad("No mailbox selected".into());
        };
        if view.read_only {
            return Outcome::No("[READ-ONLY] Mailbox is read-only".into());
        }
        let allowed: Option<std::collections::HashSet<Uid>> = only.map(|set| {
            super::fetch::resolve(view, &set, true)
                .into_iter()
                .map(|i| view.messages[i].uid)
                .collect()
        });
        let doomed: Vec<Uid> = view
            .messages
            .iter()
            .filter(|m| {
                m.flags.contains(Flags::DELETED)
                    && allowed.as_ref().is_none_or(|s| s.contains(&m.uid))
            })
            .map(|m| m.uid)
            .collect();
        let account = a.account.clone();
        let guid = view.mailbox.guid;
        let gone = match blocking(move || account.expunge(&guid, &doomed)).await {
            Ok(g) => g,
            Err(e) => return outcome_for(&e),
        };
        if let State::Selected(_, view) = &mut self.state {
            for uid in gone {
                for seq in view.remove_own(&[uid]) {
                    self.out
                        .extend_from_slice(format!("* {seq} EXPUNGE\r\n").as_bytes());
                }
            }
        }
        self.announce(true).await;
        Outcome::Ok("EXPUNGE completed".into())
    }

    /// Announce what others changed in the selected mailbox (RFC 3501
    /// §7.4.1): EXPUNGE only when `allow_expunge`.
    pub async fn announce(&mut self, allow_expunge: bool) {
        let State::Selected(a, view) = &mut self.state else {
            return;
        };
        let account = a.account.clone();
        let read = view.pending_read();
        let last_uid = view.last_uid();
        let read_only = view.read_only;
        let mailbox_first_recent = view.mailbox.first_recent;
        let guid = view.mailbox.guid;
        let query = match &read {
            PendingRead::Nothing | PendingRead::FromFeed => None,
            PendingRead::Since(modseq) => Some(Some(*modseq)),
            PendingRead::All => Some(None),
        };
        let rows = match query {
            None => Ok(Vec::new()),
            Some(since) => {
                let account = account.clone();
                blocking(move || match since {
                    Some(modseq) => account.messages_since(&guid, modseq),
                    None => account.messages(&guid),
                })
                .await
            }
        };
        // New messages: this session takes their \Recent, unless it only
        // EXAMINEd the mailbox, or another session of this server already
        // took them (the shared floor spares thousands of IDLE sessions a
        // write to the index each).
        let newest = {
            let State::Selected(_, view) = &self.state else {
                return;
            };
            let from_rows = rows
                .as_ref()
                .ok()
                .and_then(|r| r.iter().map(|m| m.uid).max());
            view.newest_arrived()
                .max(from_rows)
                .filter(|u| *u > last_uid)
        };
        let rows = match (rows, newest) {
            (Ok(rows), Some(newest)) if !read_only => {
                let floor = self.ctx.recent_floor(guid);
                if newest < floor {
                    Ok((rows, floor))
                } else {
                    let claimed = blocking(move || account.claim_recent(&guid)).await;
                    claimed.map(|first| {
                        self.ctx.raise_recent_floor(guid, newest + 1);
                        (rows, first)
                    })
                }
            }
            (Ok(rows), _) => Ok((rows, mailbox_first_recent)),
            (Err(e), _) => Err(e),
        };
        let State::Selected(_, view) = &mut self.state else {
            return;
        };
        match rows {
            Ok((rows, first_recent)) => {
                view.apply(&read, rows, first_recent, allow_expunge, &mut self.out)
            }
            Err(Error::NotFound(_)) => {
                // The mailbox itself went away (deleted or renamed elsewhere).
                self.untagged("BYE [NONEXISTENT] The selected mailbox was removed");
                self.state = State::Logout;
            }
            Err(e) => {
                tracing::warn!(session = self.id, error = %e, "could not refresh the selected mailbox")
            }
        }
    }

    // RFC 2177 IDLE.
    pub async fn idle(&mut self, _tag: &str) -> Outcome {
        self.out.extend_from_slice(b"+ idling\r\n");
        Box::pin(self.announce(true)).await;
        if self.flush().await.is_err() {
            return Outcome::Bad("Connection lost".into());
        }
        let mut shutdown = self.ctx.shutdown.clone();
        let mut drained = crate::drain::subscribe();
        let timeout = Duration::from_secs(self.ctx.config.autologout_secs);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = async {
                match &mut self.state {
                    State::Selected(_, view) => view.next_change().await,
                    _ => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                r = super::waiting::until_input(&mut self.reader, super::session::READ_BUFFER) => match r {
                    Ok(true) => IdleEvent::Input,
                    Ok(false) | Err(_) => IdleEvent::Gone,
                },
                more = changed => if more { IdleEvent::Changed } else { IdleEvent::Gone },
                _ = shutdown.changed() => IdleEvent::Shutdown,
                _ = drained.changed() => IdleEvent::Drained,
                _ = tokio::time::sleep_until(deadline) => IdleEvent::Timeout,
            };
            match event {
                IdleEvent::Input => {
                    let line = super::framing::read_plain_line(&mut self.reader, 1024).await;
                    return match line {
                        Ok(Some(l)) if l.eq_ignore_ascii_case(b"DONE") => {
                            Outcome::Ok("IDLE terminated".into())
                        }
                        Ok(Some(_)) => Outcome::Bad("Expected DONE".into()),
                        _ => Outcome::Bad("Connection lost".into()),
                    };
                }
                IdleEvent::Changed => {
                    Box::pin(self.announce(true)).await;
                    if self.flush().await.is_err() {
                        return Outcome::Bad("Connection lost".into());
                    }
                }
                IdleEvent::Shutdown => {
                    self.untagged("BYE [UNAVAILABLE] Server shutting down");
                    self.state = State::Logout;
                    return Outcome::Ok("IDLE terminated".into());
                }
                IdleEvent::Drained => {
                    tracing::info!(session = self.id, peer = %self.peer, "imap session sent away from IDLE: node drained");
                    self.untagged(&format!("BYE [UNAVAILABLE] {}", crate::drain::REASON));
                    self.state = State::Logout;
                    return Outcome::Ok("IDLE terminated".into());
                }
                IdleEvent::Timeout => {
                    self.untagged("BYE Autologout; idle for too long");
                    self.state = State::Logout;
                    return Outcome::Ok("IDLE terminated".into());
                }
                IdleEvent::Gone => {
                    self.state = State::Logout;
                    return Outcome::Bad("Connection lost".into());
                }
            }
        }
    }
}

enum IdleEvent {
    Input,
    Changed,
    Shutdown,
    Drained,
    Timeout,
    Gone,
}

/// The STATUS items asked for, e.g. `MESSAGES 3 UNSEEN 1`.
fn status_items(mb: &MailboxInfo, st: &MailboxStatus, items: &[StatusDataItemName]) -> String {
    let mut parts = Vec::new();
    for item in items {
        match item {
            StatusDataItemName::Messages => parts.push(format!("MESSAGES {}", st.messages)),
            StatusDataItemName::Recent => parts.push(format!("RECENT {}", st.recent)),
            StatusDataItemName::UidNext => parts.push(format!("UIDNEXT {}", mb.uidnext)),
            StatusDataItemName::UidValidity => {
                parts.push(format!("UIDVALIDITY {}", mb.uidvalidity))
            }
            StatusDataItemName::Unseen => parts.push(format!("UNSEEN {}", st.unseen)),
            StatusDataItemName::Size => parts.push(format!("SIZE {}", st.size)),
            _ => {}
        }
    }
    parts.join(" ")
}

/// System flags and keywords from a flag list.
pub fn split_flags(flags: &[Flag<'_>]) -> (Flags, Vec<String>) {
    let mut system = Flags::empty();
    let mut keywords = Vec::new();
    for f in flags {
        match f {
            Flag::Seen => system.insert(Flags::SEEN),
            Flag::Answered => system.insert(Flags::ANSWERED),
            Flag::Flagged => system.insert(Flags::FLAGGED),
            Flag::Deleted => system.insert(Flags::DELETED),
            Flag::Draft => system.insert(Flags::DRAFT),
            Flag::Keyword(k) => {
                let k = k.inner().to_string();
                if !keywords.iter().any(|x: &String| x.eq_ignore_ascii_case(&k)) {
                    keywords.push(k);
                }
            }
            Flag::Extension(_) => {}
        }
    }
    (system, keywords)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn list_patterns() {
        assert!(matches(b"*", b"Work.Q1"));
        assert!(!matches(b"%", b"Work.Q1"));
        assert!(matches(b"%", b"Work"));
        assert!(matches(b"Work.%", b"Work.Q1"));
        assert!(matches(b"W*1", b"Work.Q1"));
        assert!(!matches(b"Work", b"Work.Q1"));
    }
}

//! The command table: every command cove runs, decoded completely into a
//! typed value before it runs, grouped by the states it is valid in (RFC
//! 3501 §3 and §6), with what the session may announce after it.
//!
//! Validity is the group a command belongs to, so the session hands each
//! group's handlers their state already typed: a selected-state handler
//! gets the user and the view and cannot be called without them. What may
//! be announced after a command is [`Announce`], stated here for every
//! command in one exhaustive match (Dovecot's command flags are the model):
//! RFC 3501 §7.4.1 forbids EXPUNGE while responding to FETCH, STORE and
//! SEARCH, because it would shift the sequence numbers the client is
//! reading, and cove withholds it from COPY and the UID forms too.
//!
//! Adding a command: a variant in its state's group, a line in
//! [`Command::spec`], a file with its handler, an arm in the session's
//! dispatch for that group.

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::{
    Command as Codec, CommandBody, FetchModifier, SelectParameter, StoreModifier,
};
use imap_codec::imap_types::core::{Charset, Vec1};
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;
use imap_codec::imap_types::status::StatusDataItemName;

use cove_store::MailboxName;

use super::append::Append;
use super::esearch::{self, SearchReturn};
use super::extended::{self, Extended, ListOptions};
use super::framing;
use super::objectid::{self, ObjectItems};
use super::revision::Revision;
use super::sort;
use crate::auth::Secret;

/// A mailbox name from the client, or why it is not one (answered NO, not
/// BAD: it is well-formed IMAP).
pub type Named = cove_store::Result<MailboxName>;

/// In which states a command is valid (RFC 3501 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Valid {
    Any,
    NotAuthenticated,
    /// Authenticated or selected.
    Authenticated,
    Selected,
}

/// What the session may tell the client of other sessions' changes to the
/// selected mailbox once the command has run (RFC 3501 §5.2, §7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// Nothing: the command does not concern the selected mailbox, or it
    /// changes the selection.
    Nothing,
    /// EXISTS, RECENT and FETCH FLAGS, but no EXPUNGE: the command uses
    /// message numbers an EXPUNGE would shift (FETCH, STORE, SEARCH, COPY
    /// and their UID forms).
    WithoutExpunge,
    /// Everything, EXPUNGE included.
    Everything,
}

/// One row of the command table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub valid: Valid,
    pub announce: Announce,
}

/// RFC 3501 §6.1: valid in any state.
pub enum AnyState {
    Capability,
    Noop,
    Logout,
    /// RFC 2971.
    Id,
}

/// RFC 3501 §6.2: valid before login only.
pub enum NotAuthenticated {
    StartTls,
    Login {
        username: String,
        password: Secret,
    },
    Authenticate {
        mechanism: String,
        initial_response: Option<Vec<u8>>,
    },
}

/// RFC 3501 §6.3: valid once logged in, whether a mailbox is selected or not.
pub enum Authenticated {
    /// RFC 2342.
    Namespace,
    /// RFC 5161.
    Enable(Vec1<CapabilityEnable<'static>>),
    Select {
        mailbox: Named,
        read_only: bool,
        parameters: Vec<SelectParameter>,
    },
    /// With RFC 6154 §3 special uses (empty: a plain CREATE).
    Create {
        mailbox: Named,
        special_use: Vec<String>,
    },
    Delete(Named),
    Rename {
        from: Named,
        to: Named,
    },
    Subscribe {
        mailbox: Named,
        subscribe: bool,
    },
    /// LIST and LSUB, with RFC 5258 options unless `plain`.
    List {
        options: ListOptions,
        lsub: bool,
        plain: bool,
    },
    Status {
        mailbox: Named,
        items: Vec<StatusDataItemName>,
        /// RFC 8474 MAILBOXID.
        mailbox_id: bool,
    },
    /// One message, or several (RFC 3502 MULTIAPPEND).
    Append(Vec<Append>),
    /// RFC 2177.
    Idle,
    /// RFC 4978 COMPRESS DEFLATE.
    Compress,
    /// RFC 9208 GETQUOTA, of a quota root.
    GetQuota(String),
    /// RFC 9208 GETQUOTAROOT.
    GetQuotaRoot(Named),
    /// RFC 9208 SETQUOTA.
    SetQuota,
}

/// RFC 3501 §6.4: valid with a mailbox selected.
pub enum Selected {
    Check,
    /// CLOSE (expunges) or RFC 3691 UNSELECT (does not).
    Close {
        expunge: bool,
    },
    /// EXPUNGE, or RFC 4315 UID EXPUNGE of a set.
    Expunge(Option<SequenceSet>),
    Fetch(Fetch),
    Store(Store),
    Search {
        criteria: Vec1<SearchKey<'static>>,
        uid: bool,
        /// RFC 4731 RETURN options: answered with ESEARCH.
        ret: Option<SearchReturn>,
    },
    /// RFC 5256 SORT (with RFC 5957 DISPLAYFROM / DISPLAYTO).
    Sort {
        order: Vec<sort::SortCriterion>,
        criteria: Vec1<SearchKey<'static>>,
        uid: bool,
        /// RFC 5267 ESORT RETURN options: answered with ESEARCH.
        ret: Option<SearchReturn>,
    },
    /// RFC 5256 THREAD; `None`: an algorithm cove does not know.
    Thread {
        algorithm: Option<sort::Algorithm>,
        criteria: Vec1<SearchKey<'static>>,
        uid: bool,
    },
    /// SEARCH, SORT or THREAD (`name`) in a charset cove does not search
    /// in: NO [BADCHARSET] (RFC 3501 §6.4.4, RFC 5256 §3), whatever the
    /// rest of the command asks.
    UnknownCharset {
        name: &'static str,
    },
    /// COPY or RFC 6851 MOVE.
    Copy {
        set: SequenceSet,
        mailbox: Named,
        uid: bool,
        is_move: bool,
    },
}

pub struct Fetch {
    pub set: SequenceSet,
    pub items: Vec<MessageDataItemName<'static>>,
    pub uid: bool,
    pub modifiers: Vec<FetchModifier>,
    /// RFC 8474 EMAILID, THREADID.
    pub objects: ObjectItems,
}

pub struct Store {
    pub set: SequenceSet,
    pub kind: StoreType,
    pub response: StoreResponse,
    pub flags: Vec<Flag<'static>>,
    pub uid: bool,
    pub modifiers: Vec<StoreModifier>,
}

pub enum Command {
    Any(AnyState),
    NotAuthenticated(NotAuthenticated),
    Authenticated(Authenticated),
    Selected(Selected),
}

impl Command {
    /// The command table.
    pub fn spec(&self) -> Spec {
        use Announce::*;
        let (name, announce) = match self {
            Command::Any(c) => match c {
                AnyState::Capability => ("CAPABILITY", Nothing),
                AnyState::Noop => ("NOOP", Everything),
                AnyState::Logout => ("LOGOUT", Nothing),
                AnyState::Id => ("ID", Nothing),
            },
            Command::NotAuthenticated(c) => match c {
                NotAuthenticated::StartTls => ("STARTTLS", Nothing),
                NotAuthenticated::Login { .. } => ("LOGIN", Nothing),
                NotAuthenticated::Authenticate { .. } => ("AUTHENTICATE", Nothing),
            },
            Command::Authenticated(c) => match c {
                Authenticated::Namespace => ("NAMESPACE", Nothing),
                Authenticated::Enable(_) => ("ENABLE", Nothing),
                Authenticated::Select {
                    read_only: false, ..
                } => ("SELECT", Nothing),
                Authenticated::Select {
                    read_only: true, ..
                } => ("EXAMINE", Nothing),
                Authenticated::Create { .. } => ("CREATE", Nothing),
                Authenticated::Delete(_) => ("DELETE", Nothing),
                Authenticated::Rename { .. } => ("RENAME", Nothing),
                Authenticated::Subscribe {
                    subscribe: true, ..
                } => ("SUBSCRIBE", Nothing),
                Authenticated::Subscribe {
                    subscribe: false, ..
                } => ("UNSUBSCRIBE", Nothing),
                Authenticated::List { lsub: false, .. } => ("LIST", Nothing),
                Authenticated::List { lsub: true, .. } => ("LSUB", Nothing),
                Authenticated::Status { .. } => ("STATUS", Nothing),
                Authenticated::Append(_) => ("APPEND", Everything),
                // IDLE announces as changes come (idle.rs).
                Authenticated::Idle => ("IDLE", Everything),
                Authenticated::Compress => ("COMPRESS", Nothing),
                Authenticated::GetQuota(_) => ("GETQUOTA", Nothing),
                Authenticated::GetQuotaRoot(_) => ("GETQUOTAROOT", Nothing),
                Authenticated::SetQuota => ("SETQUOTA", Nothing),
            },
            Command::Selected(c) => match c {
                Selected::Check => ("CHECK", Everything),
                Selected::Close { expunge: true } => ("CLOSE", Nothing),
                Selected::Close { expunge: false } => ("UNSELECT", Nothing),
                Selected::Expunge(None) => ("EXPUNGE", Everything),
                Selected::Expunge(Some(_)) => ("UID EXPUNGE", Everything),
                Selected::Fetch(f) => (if f.uid { "UID FETCH" } else { "FETCH" }, WithoutExpunge),
                Selected::Store(s) => (if s.uid { "UID STORE" } else { "STORE" }, WithoutExpunge),
                Selected::Search { uid, .. } => {
                    (if *uid { "UID SEARCH" } else { "SEARCH" }, WithoutExpunge)
                }
                Selected::Sort { uid, .. } => {
                    (if *uid { "UID SORT" } else { "SORT" }, WithoutExpunge)
                }
                Selected::Thread { uid, .. } => {
                    (if *uid { "UID THREAD" } else { "THREAD" }, WithoutExpunge)
                }
                Selected::UnknownCharset { name } => (*name, WithoutExpunge),
                Selected::Copy {
                    is_move: false,
                    uid,
                    ..
                } => (if *uid { "UID COPY" } else { "COPY" }, WithoutExpunge),
                Selected::Copy {
                    is_move: true, uid, ..
                } => (if *uid { "UID MOVE" } else { "MOVE" }, Everything),
            },
        };
        let valid = match self {
            Command::Any(_) => Valid::Any,
            Command::NotAuthenticated(_) => Valid::NotAuthenticated,
            Command::Authenticated(_) => Valid::Authenticated,
            Command::Selected(_) => Valid::Selected,
        };
        Spec {
            name,
            valid,
            announce,
        }
    }
}

/// What a command line decoded to.
pub enum Decoded {
    Command {
        tag: String,
        command: Command,
    },
    /// Well-formed IMAP cove does not run: BAD.
    Unsupported {
        tag: String,
        name: &'static str,
    },
    /// Not a command: BAD, counted. `line`: what imap-codec could not
    /// decode, for the log.
    Invalid {
        tag: String,
        why: String,
        line: Option<Vec<u8>>,
    },
}

/// [`decode_as`] for an IMAP4rev1 session.
pub fn decode(bytes: Vec<u8>) -> Decoded {
    decode_as(bytes, Revision::Rev1)
}

/// Decode one complete command (its lines and literals, as `framing` read
/// them), as a session speaking `rev` means it (mailbox names, the answer
/// a SEARCH asks for: `revision.rs`). LIST-EXTENDED and CREATE-SPECIAL-USE
/// go to `extended` (imap-codec cannot decode them); everything else to
/// imap-codec. An APPEND keeps the buffer, its message staying where it
/// was read.
pub fn decode_as(bytes: Vec<u8>, rev: Revision) -> Decoded {
    // RFC 8514 save-date search keys, rewritten into keys imap-codec knows
    // (once: the parts below decode their rewritten lines again).
    let bytes = match super::savedate::rewrite(&bytes) {
        None => bytes,
        Some(Ok(rewritten)) => rewritten,
        Some(Err(why)) => {
            return Decoded::Invalid {
                tag: framing::tag_of(&bytes).unwrap_or("*").to_string(),
                why,
                line: None,
            };
        }
    };
    decode_rewritten(bytes, rev)
}

/// [`decode_as`] after the save-date rewrite.
fn decode_rewritten(bytes: Vec<u8>, rev: Revision) -> Decoded {
    let tag_or_star = |bytes: &[u8]| framing::tag_of(bytes).unwrap_or("*").to_string();
    if let Some(parsed) = extended::parse(&bytes) {
        return match parsed {
            Ok(Extended::List { tag, options }) => Decoded::Command {
                tag,
                command: Command::Authenticated(Authenticated::List {
                    options,
                    lsub: false,
                    plain: false,
                }),
            },
            Ok(Extended::CreateSpecialUse {
                tag,
                mailbox,
                special_use,
            }) => Decoded::Command {
                tag,
                command: Command::Authenticated(Authenticated::Create {
                    mailbox: rev.parse_name(mailbox.as_bytes()),
                    special_use,
                }),
            },
            Err(why) => Decoded::Invalid {
                tag: tag_or_star(&bytes),
                why,
                line: None,
            },
        };
    }
    // RFC 4731: SEARCH RETURN (...) is a SEARCH with options imap-codec
    // does not know (and RFC 5267 SORT RETURN a SORT); they are taken off
    // first.
    if let Some(split) = esearch::split_return(&bytes) {
        return match split {
            Ok((ret, plain)) => match decode_rewritten(plain, rev) {
                Decoded::Command {
                    tag,
                    command: Command::Selected(Selected::Search { criteria, uid, .. }),
                } => Decoded::Command {
                    tag,
                    command: Command::Selected(Selected::Search {
                        criteria,
                        uid,
                        ret: Some(ret),
                    }),
                },
                Decoded::Command {
                    tag,
                    command:
                        Command::Selected(Selected::Sort {
                            order,
                            criteria,
                            uid,
                            ..
                        }),
                } => Decoded::Command {
                    tag,
                    command: Command::Selected(Selected::Sort {
                        order,
                        criteria,
                        uid,
                        ret: Some(ret),
                    }),
                },
                other => other,
            },
            Err(why) => Decoded::Invalid {
                tag: tag_or_star(&bytes),
                why,
                line: None,
            },
        };
    }
    // RFC 8474: EMAILID, THREADID, MAILBOXID are replaced by items
    // imap-codec knows, and put back here.
    if let Some((objects, plain)) = objectid::split(&bytes) {
        return match decode_rewritten(plain, rev) {
            Decoded::Command {
                tag,
                command: Command::Selected(Selected::Fetch(mut fetch)),
            } => {
                dedup_items(&mut fetch.items);
                fetch.objects = objects;
                Decoded::Command {
                    tag,
                    command: Command::Selected(Selected::Fetch(fetch)),
                }
            }
            Decoded::Command {
                tag,
                command:
                    Command::Authenticated(Authenticated::Status {
                        mailbox, mut items, ..
                    }),
            } => {
                dedup_items(&mut items);
                Decoded::Command {
                    tag,
                    command: Command::Authenticated(Authenticated::Status {
                        mailbox,
                        items,
                        mailbox_id: objects.mailboxid,
                    }),
                }
            }
            other => other,
        };
    }
    // RFC 3502 MULTIAPPEND: one APPEND per message, each decoded alone.
    if let Some(parts) = super::append::split_multi(&bytes) {
        let mut appends = Vec::with_capacity(parts.len());
        for part in parts {
            match decode_rewritten(part, rev) {
                Decoded::Command {
                    command: Command::Authenticated(Authenticated::Append(mut one)),
                    ..
                } => appends.append(&mut one),
                Decoded::Invalid { why, line, .. } => {
                    return Decoded::Invalid {
                        tag: tag_or_star(&bytes),
                        why,
                        line,
                    };
                }
                _ => {
                    return Decoded::Invalid {
                        tag: tag_or_star(&bytes),
                        why: "Command not understood".into(),
                        line: None,
                    };
                }
            }
        }
        return Decoded::Command {
            tag: tag_or_star(&bytes),
            command: Command::Authenticated(Authenticated::Append(appends)),
        };
    }
    let decoded = match CommandCodec::default().decode(&bytes) {
        Ok((_, command)) => Some(command),
        Err(_) => None,
    };
    let Some(decoded) = decoded else {
        if let Some(name) = undecoded_extension(&bytes) {
            return Decoded::Unsupported {
                tag: tag_or_star(&bytes),
                name,
            };
        }
        return Decoded::Invalid {
            tag: tag_or_star(&bytes),
            why: "Command not understood".into(),
            line: Some(bytes),
        };
    };
    let tag = decoded.tag.inner().to_string();
    if let Some(append) = Append::located(&decoded, &bytes, rev) {
        drop(decoded);
        return Decoded::Command {
            tag,
            command: Command::Authenticated(Authenticated::Append(vec![append.with_buffer(bytes)])),
        };
    }
    let command: Codec<'static> = decoded.into_static();
    drop(bytes);
    match typed(command.body, rev) {
        // RFC 9051 §6.4.4: a rev2 SEARCH is answered with ESEARCH.
        Ok(Command::Selected(Selected::Search {
            criteria,
            uid,
            ret: None,
        })) => Decoded::Command {
            command: Command::Selected(Selected::Search {
                criteria,
                uid,
                ret: rev.search_return(&tag),
            }),
            tag,
        },
        Ok(command) => Decoded::Command { tag, command },
        Err(name) => Decoded::Unsupported { tag, name },
    }
}

/// imap-codec's command as cove's, or the name of one cove does not run.
fn typed(body: CommandBody<'static>, rev: Revision) -> Result<Command, &'static str> {
    let named = |m: &imap_codec::imap_types::mailbox::Mailbox<'_>| rev.parse_name(mailbox_bytes(m));
    use Authenticated as A;
    use CommandBody as C;
    let name = body.name();
    let is_move = matches!(body, C::Move { .. });
    let charset = match &body {
        C::Search { charset, .. } => charset.as_ref(),
        C::Sort { charset, .. } | C::Thread { charset, .. } => Some(charset),
        _ => None,
    };
    if charset.is_some_and(|c| !known_charset(c)) {
        return Ok(Command::Selected(Selected::UnknownCharset { name }));
    }
    Ok(match body {
        C::Capability => Command::Any(AnyState::Capability),
        C::Noop => Command::Any(AnyState::Noop),
        C::Logout => Command::Any(AnyState::Logout),
        C::Id { .. } => Command::Any(AnyState::Id),
        C::StartTLS => Command::NotAuthenticated(NotAuthenticated::StartTls),
        C::Login { username, password } => Command::NotAuthenticated(NotAuthenticated::Login {
            username: String::from_utf8_lossy(username.as_ref()).into_owned(),
            password: Secret(String::from_utf8_lossy(password.declassify().as_ref()).into_owned()),
        }),
        C::Authenticate {
            mechanism,
            initial_response,
        } => Command::NotAuthenticated(NotAuthenticated::Authenticate {
            mechanism: mechanism.as_ref().to_string(),
            initial_response: initial_response.map(|s| s.declassify().to_vec()),
        }),
        C::Namespace => Command::Authenticated(A::Namespace),
        C::Enable { capabilities } => Command::Authenticated(A::Enable(capabilities)),
        C::Select {
            mailbox,
            parameters,
        } => Command::Authenticated(A::Select {
            mailbox: named(&mailbox),
            read_only: false,
            parameters,
        }),
        C::Examine {
            mailbox,
            parameters,
        } => Command::Authenticated(A::Select {
            mailbox: named(&mailbox),
            read_only: true,
            parameters,
        }),
        // RFC 3501 §6.3.3: a trailing delimiter is dropped.
        C::Create { mailbox } => Command::Authenticated(A::Create {
            mailbox: rev.parse_name(trim_delimiter(mailbox_bytes(&mailbox))),
            special_use: Vec::new(),
        }),
        C::Delete { mailbox } => Command::Authenticated(A::Delete(named(&mailbox))),
        C::Rename { from, to } => Command::Authenticated(A::Rename {
            from: named(&from),
            to: named(&to),
        }),
        C::Subscribe { mailbox } => Command::Authenticated(A::Subscribe {
            mailbox: named(&mailbox),
            subscribe: true,
        }),
        C::Unsubscribe { mailbox } => Command::Authenticated(A::Subscribe {
            mailbox: named(&mailbox),
            subscribe: false,
        }),
        C::List {
            reference,
            mailbox_wildcard,
        } => plain_list(&reference, &mailbox_wildcard, false),
        C::Lsub {
            reference,
            mailbox_wildcard,
        } => plain_list(&reference, &mailbox_wildcard, true),
        C::Status {
            mailbox,
            item_names,
        } => Command::Authenticated(A::Status {
            mailbox: named(&mailbox),
            items: item_names.into_owned(),
            mailbox_id: false,
        }),
        C::Idle => Command::Authenticated(A::Idle),
        // DEFLATE is the only algorithm imap-codec decodes (RFC 4978 §3).
        C::Compress { .. } => Command::Authenticated(A::Compress),
        C::GetQuota { root } => Command::Authenticated(A::GetQuota(
            String::from_utf8_lossy(root.as_ref()).into_owned(),
        )),
        C::GetQuotaRoot { mailbox } => Command::Authenticated(A::GetQuotaRoot(named(&mailbox))),
        C::SetQuota { .. } => Command::Authenticated(A::SetQuota),
        C::Check => Command::Selected(Selected::Check),
        C::Close => Command::Selected(Selected::Close { expunge: true }),
        C::Unselect => Command::Selected(Selected::Close { expunge: false }),
        C::Expunge => Command::Selected(Selected::Expunge(None)),
        C::ExpungeUid { sequence_set } => Command::Selected(Selected::Expunge(Some(sequence_set))),
        C::Fetch {
            sequence_set,
            macro_or_item_names,
            uid,
            modifiers,
        } => Command::Selected(Selected::Fetch(Fetch {
            set: sequence_set,
            items: match macro_or_item_names {
                MacroOrMessageDataItemNames::Macro(m) => m
                    .expand()
                    .into_iter()
                    .map(IntoStatic::into_static)
                    .collect(),
                MacroOrMessageDataItemNames::MessageDataItemNames(v) => v,
            },
            uid,
            modifiers,
            objects: ObjectItems::default(),
        })),
        C::Store {
            sequence_set,
            kind,
            response,
            flags,
            uid,
            modifiers,
        } => Command::Selected(Selected::Store(Store {
            set: sequence_set,
            kind,
            response,
            flags,
            uid,
            modifiers,
        })),
        C::Search { criteria, uid, .. } => Command::Selected(Selected::Search {
            criteria,
            uid,
            ret: None,
        }),
        C::Sort {
            sort_criteria,
            search_criteria,
            uid,
            ..
        } => Command::Selected(Selected::Sort {
            order: sort_criteria
                .into_iter()
                .map(|c| sort::SortCriterion {
                    key: sort_key(&c.key),
                    reverse: c.reverse,
                })
                .collect(),
            criteria: search_criteria,
            uid,
            ret: None,
        }),
        C::Thread {
            algorithm,
            search_criteria,
            uid,
            ..
        } => Command::Selected(Selected::Thread {
            algorithm: match algorithm {
                ThreadingAlgorithm::OrderedSubject => Some(sort::Algorithm::OrderedSubject),
                ThreadingAlgorithm::References => Some(sort::Algorithm::References),
                ThreadingAlgorithm::Other(_) => None,
            },
            criteria: search_criteria,
            uid,
        }),
        C::Copy {
            sequence_set,
            mailbox,
            uid,
        }
        | C::Move {
            sequence_set,
            mailbox,
            uid,
        } => Command::Selected(Selected::Copy {
            set: sequence_set,
            mailbox: named(&mailbox),
            uid,
            is_move,
        }),
        // APPEND is taken apart above, with its buffer.
        _ => return Err(name),
    })
}

/// A charset cove searches in (RFC 3501 §6.4.4, RFC 5256 §3).
fn known_charset(c: &Charset<'_>) -> bool {
    let c: &str = c.as_ref();
    c.eq_ignore_ascii_case("UTF-8") || c.eq_ignore_ascii_case("US-ASCII")
}

/// imap-codec's sort key as the engine's.
fn sort_key(k: &imap_codec::imap_types::extensions::sort::SortKey) -> sort::SortKey {
    use imap_codec::imap_types::extensions::sort::SortKey as K;
    match k {
        K::Arrival => sort::SortKey::Arrival,
        K::Cc => sort::SortKey::Cc,
        K::Date => sort::SortKey::Date,
        K::From => sort::SortKey::From,
        K::Size => sort::SortKey::Size,
        K::Subject => sort::SortKey::Subject,
        K::To => sort::SortKey::To,
        K::DisplayFrom => sort::SortKey::DisplayFrom,
        K::DisplayTo => sort::SortKey::DisplayTo,
    }
}

/// Commands of extensions imap-codec does not decode, and cove does not
/// advertise (imap-codec decodes the others it knows into commands cove
/// answers as unsupported).
const UNDECODED_EXTENSIONS: &[&str] = &[
    "NOTIFY",         // RFC 5465
    "GETMETADATA",    // RFC 5464
    "SETMETADATA",    // RFC 5464
    "GETACL",         // RFC 4314
    "SETACL",         // RFC 4314
    "DELETEACL",      // RFC 4314
    "LISTRIGHTS",     // RFC 4314
    "MYRIGHTS",       // RFC 4314
    "URLFETCH",       // RFC 4467
    "GENURLAUTH",     // RFC 4467
    "RESETKEY",       // RFC 4467
    "UNAUTHENTICATE", // RFC 8437
    "REPLACE",        // RFC 8508
    "LANGUAGE",       // RFC 5255
    "COMPARATOR",     // RFC 5255
    "CONVERT",        // RFC 5259
    "XLIST",          // Gmail's predecessor of SPECIAL-USE
];

/// The name of an extension command imap-codec could not decode, if it is
/// one: the line has a tag and one of [`UNDECODED_EXTENSIONS`] (after
/// `UID` for the UID forms).
fn undecoded_extension(line: &[u8]) -> Option<&'static str> {
    let verb = framing::command_name_of(line)?;
    UNDECODED_EXTENSIONS
        .iter()
        .find(|name| name.as_bytes().eq_ignore_ascii_case(verb))
        .copied()
}

/// Items without repeats, in their first order (a substituted OBJECTID
/// item may repeat one the client named).
fn dedup_items<T: PartialEq>(items: &mut Vec<T>) {
    let mut i = 0;
    while i < items.len() {
        if items[..i].contains(&items[i]) {
            items.remove(i);
        } else {
            i += 1;
        }
    }
}

/// The bytes of a mailbox name as the client sent them.
pub fn mailbox_bytes<'a>(m: &'a imap_codec::imap_types::mailbox::Mailbox<'_>) -> &'a [u8] {
    use imap_codec::imap_types::mailbox::Mailbox;
    match m {
        Mailbox::Inbox => b"INBOX",
        Mailbox::Other(o) => o.as_ref(),
    }
}

/// A name without its trailing hierarchy delimiters.
fn trim_delimiter(name: &[u8]) -> &[u8] {
    let end = name.iter().rposition(|b| *b != b'.').map_or(0, |i| i + 1);
    &name[..end]
}

/// RFC 3501 LIST/LSUB: a reference (text the pattern is appended to, not a
/// name to store) and one pattern.
fn plain_list(
    reference: &imap_codec::imap_types::mailbox::Mailbox<'_>,
    pattern: &imap_codec::imap_types::mailbox::ListMailbox<'_>,
    lsub: bool,
) -> Command {
    use imap_codec::imap_types::mailbox::ListMailbox;
    let pattern = match pattern {
        ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
        ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
    };
    let options = ListOptions {
        reference: String::from_utf8_lossy(mailbox_bytes(reference)).into_owned(),
        patterns: vec![pattern],
        ..ListOptions::default()
    };
    Command::Authenticated(Authenticated::List {
        options,
        lsub,
        plain: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(line: &str) -> Spec {
        match decode(line.as_bytes().to_vec()) {
            Decoded::Command { command, .. } => command.spec(),
            _ => panic!("{line} not decoded"),
        }
    }

    #[test]
    fn the_table_says_where_expunge_may_be_announced() {
        // RFC 3501 §7.4.1.
        for line in [
            "a FETCH 1 FLAGS\r\n",
            "a UID FETCH 1 FLAGS\r\n",
            "a STORE 1 +FLAGS (\\Seen)\r\n",
            "a SEARCH ALL\r\n",
            "a COPY 1 Trash\r\n",
        ] {
            assert_eq!(spec(line).announce, Announce::WithoutExpunge, "{line}");
            assert_eq!(spec(line).valid, Valid::Selected, "{line}");
        }
        for line in [
            "a NOOP\r\n",
            "a CHECK\r\n",
            "a EXPUNGE\r\n",
            "a MOVE 1 Trash\r\n",
        ] {
            assert_eq!(spec(line).announce, Announce::Everything, "{line}");
        }
        assert_eq!(spec("a SELECT INBOX\r\n").announce, Announce::Nothing);
        assert_eq!(spec("a SELECT INBOX\r\n").valid, Valid::Authenticated);
        assert_eq!(spec("a LOGIN u p\r\n").valid, Valid::NotAuthenticated);
        assert_eq!(spec("a CAPABILITY\r\n").valid, Valid::Any);
    }

    #[test]
    fn list_extended_is_found_by_its_name_whatever_the_tag() {
        // The LIST-EXTENDED parser was chosen by " LIST " in the first 64
        // bytes: behind a long tag, LIST (SUBSCRIBED) went to imap-codec
        // and got BAD.
        let tag = "t".repeat(62);
        let line = format!("{tag} LIST (SUBSCRIBED) \"\" *\r\n");
        match decode(line.into_bytes()) {
            Decoded::Command {
                tag: t,
                command: Command::Authenticated(Authenticated::List { options, .. }),
            } => {
                assert_eq!(t, tag);
                assert!(options.subscribed);
            }
            _ => panic!("LIST-EXTENDED not decoded"),
        }
        assert_eq!(spec("a SELECT \" LIST (\"\r\n").name, "SELECT");
    }

    /// RFC 5256 through imap-codec: keys, REVERSE, charset, the UID forms;
    /// malformed lines are Invalid (BAD), never a panic.
    #[test]
    fn sort_and_thread_decode() {
        match decode(b"a UID SORT (REVERSE DATE DISPLAYFROM) utf-8 SUBJECT x\r\n".to_vec()) {
            Decoded::Command {
                command: Command::Selected(Selected::Sort { order, uid, .. }),
                ..
            } => {
                assert_eq!(
                    order,
                    [
                        sort::SortCriterion {
                            key: sort::SortKey::Date,
                            reverse: true
                        },
                        sort::SortCriterion {
                            key: sort::SortKey::DisplayFrom,
                            reverse: false
                        }
                    ]
                );
                assert!(uid);
            }
            _ => panic!("SORT not decoded"),
        }
        // RFC 5256 §3: NO [BADCHARSET], decided once for the three commands.
        for line in [
            "a SORT (DATE) koi8-r ALL\r\n",
            "a UID THREAD REFERENCES ISO-8859-1 ALL\r\n",
            "a SEARCH CHARSET x-unknown ALL\r\n",
            "a SEARCH RETURN (COUNT) CHARSET x-unknown ALL\r\n",
        ] {
            assert!(
                matches!(
                    decode(line.as_bytes().to_vec()),
                    Decoded::Command {
                        command: Command::Selected(Selected::UnknownCharset { .. }),
                        ..
                    }
                ),
                "{line}"
            );
        }
        match decode(b"a THREAD Other UTF-8 ALL\r\n".to_vec()) {
            Decoded::Command {
                command:
                    Command::Selected(Selected::Thread {
                        algorithm: None,
                        uid: false,
                        ..
                    }),
                ..
            } => {}
            _ => panic!("THREAD not decoded"),
        }
        assert_eq!(
            spec("a THREAD REFERENCES UTF-8 ALL\r\n").announce,
            Announce::WithoutExpunge
        );
        assert_eq!(spec("a UID SORT (SIZE) UTF-8 ALL\r\n").name, "UID SORT");
        let deep = format!(
            "a SORT (DATE) UTF-8 {}ALL{}\r\n",
            "(".repeat(5000),
            ")".repeat(5000)
        );
        for line in [
            "a SORT () UTF-8 ALL\r\n",
            "a SORT (DATE UTF-8 ALL\r\n",
            "a SORT (REVERSE REVERSE DATE) UTF-8 ALL\r\n",
            "a SORT (DATE)\r\n",
            "a THREAD\r\n",
            deep.as_str(),
        ] {
            assert!(
                matches!(decode(line.as_bytes().to_vec()), Decoded::Invalid { .. }),
                "{line}"
            );
        }
    }
}

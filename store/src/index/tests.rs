//! Schema migrations and the UIDVALIDITY counter.

use super::*;

/// The schema of version 1, as it was shipped.
const SCHEMA_V1: &str = "
CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE mailbox(
  id INTEGER PRIMARY KEY,
  guid BLOB NOT NULL UNIQUE,
  name TEXT NOT NULL UNIQUE,
  dir TEXT NOT NULL UNIQUE,
  uidvalidity INTEGER NOT NULL,
  uidnext INTEGER NOT NULL,
  highestmodseq INTEGER NOT NULL,
  special_use TEXT,
  subscribed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE message(
  mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, guid BLOB NOT NULL UNIQUE,
  content_id BLOB NOT NULL, flags INTEGER NOT NULL, keywords TEXT NOT NULL DEFAULT '',
  modseq INTEGER NOT NULL, internal_date INTEGER NOT NULL, size INTEGER NOT NULL,
  base TEXT NOT NULL, file TEXT NOT NULL, PRIMARY KEY(mailbox_id, uid)
) WITHOUT ROWID;
CREATE TABLE tombstone(
  mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, guid BLOB NOT NULL,
  modseq INTEGER NOT NULL, PRIMARY KEY(mailbox_id, uid)
) WITHOUT ROWID;
CREATE TABLE change(
  modseq INTEGER PRIMARY KEY, mailbox_guid BLOB NOT NULL, kind TEXT NOT NULL,
  uid INTEGER, guid BLOB, detail TEXT
);
INSERT INTO meta VALUES('schema', 1), ('modseq', 7), ('bytes', 0);
INSERT INTO mailbox VALUES(1, x'01', 'INBOX', '', 1700000000, 5, 3, NULL, 1);
INSERT INTO mailbox VALUES(2, x'02', 'Sent', '.Sent', 1700000001, 1, 0, '\\Sent', 1);
INSERT INTO mailbox VALUES(3, x'03', 'Old', '.Old', 1700000002, 1, 0, NULL, 0);
";

#[test]
fn migrates_a_version_1_index() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("index.sqlite");
    Connection::open(&path)
        .unwrap()
        .execute_batch(SCHEMA_V1)
        .unwrap();
    for _ in 0..2 {
        // Twice: the second open finds version 2 and changes nothing.
        let mut conn = open(&path, false).unwrap();
        let v: i64 = conn
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        assert_eq!(subscriptions(&conn).unwrap(), vec!["INBOX", "Sent"]);
        let subscribed: Vec<(String, bool)> = mailboxes(&conn)
            .unwrap()
            .into_iter()
            .map(|m| (m.name, m.subscribed))
            .collect();
        assert_eq!(
            subscribed,
            vec![
                ("INBOX".to_string(), true),
                ("Old".to_string(), false),
                ("Sent".to_string(), true)
            ]
        );
        assert_eq!(current_modseq(&conn).unwrap(), 7);
        // The UIDVALIDITY counter starts above every existing one.
        let env = crate::env::Env::default();
        let mut tx = Tx::begin(&mut conn, &env).unwrap();
        assert!(tx.next_uidvalidity(1, None).unwrap() > 1700000002);
    }
}

#[test]
fn refuses_a_newer_schema() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("index.sqlite");
    drop(open(&path, false).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE meta SET value = 99 WHERE key = 'schema'", [])
        .unwrap();
    // An index problem (temporary for LMTP), not bad input.
    assert!(matches!(open(&path, false), Err(crate::Error::Index(_))));
}

#[test]
fn uidvalidity_never_repeats_within_a_second() {
    let d = tempfile::tempdir().unwrap();
    let mut conn = open(&d.path().join("index.sqlite"), false).unwrap();
    let env = crate::env::Env::default();
    let mut tx = Tx::begin(&mut conn, &env).unwrap();
    let a = tx.next_uidvalidity(1_700_000_000, None).unwrap();
    let b = tx.next_uidvalidity(1_700_000_000, None).unwrap();
    let c = tx
        .next_uidvalidity(1_700_000_000, Some(1_800_000_000))
        .unwrap();
    assert_eq!((a, b, c), (1_700_000_000, 1_700_000_001, 1_800_000_001));
}

/// RFC 9208 MESSAGE usage: an index from before the count was kept gets it
/// at open, and a count an older cove left stale is made right again.
#[test]
fn the_message_count_is_taken_at_open() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("index.sqlite");
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(SCHEMA_V1).unwrap();
    raw.execute_batch(
        "INSERT INTO message VALUES(1, 1, x'aa', x'bb', 0, '', 1, 0, 10, 'a', 'cur/a');
         INSERT INTO message VALUES(1, 2, x'ab', x'bc', 0, '', 2, 0, 10, 'b', 'cur/b');",
    )
    .unwrap();
    let conn = open(&path, false).unwrap();
    assert_eq!(message_total(&conn).unwrap(), 2);
    drop(conn);
    raw.execute("UPDATE meta SET value = 99 WHERE key = 'messages'", [])
        .unwrap();
    let conn = open(&path, false).unwrap();
    assert_eq!(message_total(&conn).unwrap(), 2);
}

/// A schema-4 index (two modseq indexes, a change-log row per flag
/// change) opens as schema 5 with the same flags, keywords and modseqs,
/// its old change-log rows still read, the all-mailbox modseq index gone,
/// and replication's modseq queries walk the per-mailbox index (no scan of
/// every message).
#[test]
fn migrates_a_version_4_index() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("index.sqlite");
    drop(open(&path, false).unwrap());
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE INDEX message_modseq_all ON message(modseq);
         UPDATE meta SET value = 4 WHERE key = 'schema';
         UPDATE meta SET value = 12 WHERE key = 'modseq';
         INSERT INTO mailbox(id, guid, name, dir, uidvalidity, uidnext, highestmodseq)
           VALUES(1, x'01', 'INBOX', '', 1700000000, 3, 12);
         INSERT INTO message(mailbox_id, uid, guid, content_id, flags, keywords, modseq,
                             internal_date, size, base, file, placed, clock)
           VALUES(1, 1, x'aa', x'bb', 1, 'work', 11, 0, 10, 'a', 'cur/a:2,Sa', 0, ''),
                 (1, 2, x'ab', x'bc', 4, '', 12, 0, 10, 'b', 'cur/b:2,F', 0, '');
         INSERT INTO change(modseq, mailbox_guid, kind, uid, guid, detail)
           VALUES(11, x'01', 'flags', 1, NULL, '1 work'), (12, x'01', 'flags', 2, NULL, '4');",
    )
    .unwrap();
    for _ in 0..2 {
        let conn = open(&path, false).unwrap();
        let v: i64 = conn
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(v, 5);
        let rows: Vec<(Uid, u8, Vec<String>, ModSeq)> = messages(&conn, 1)
            .unwrap()
            .into_iter()
            .map(|m| (m.uid, m.flags.bits(), m.keywords, m.modseq))
            .collect();
        assert_eq!(
            rows,
            vec![(1, 1, vec!["work".to_string()], 11), (2, 4, vec![], 12)]
        );
        assert_eq!(
            messages_since(&conn, 1, 11)
                .unwrap()
                .iter()
                .map(|m| m.uid)
                .collect::<Vec<_>>(),
            vec![2]
        );
        let logged: Vec<(ModSeq, ChangeKind)> = changes_since(&conn, 10)
            .unwrap()
            .into_iter()
            .map(|c| (c.modseq, c.kind))
            .collect();
        assert_eq!(
            logged,
            vec![
                (
                    11,
                    ChangeKind::FlagsChanged {
                        uid: 1,
                        flags: Flags::SEEN,
                        keywords: vec!["work".into()]
                    }
                ),
                (
                    12,
                    ChangeKind::FlagsChanged {
                        uid: 2,
                        flags: Flags::from_bits(4),
                        keywords: vec![]
                    }
                ),
            ]
        );
        let gone: bool = conn
            .query_row(
                "SELECT NOT EXISTS(SELECT 1 FROM sqlite_master WHERE name = 'message_modseq_all')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(gone);
        for sql in [
            "SELECT mb.guid, m.uid FROM mailbox mb CROSS JOIN message m ON mb.id = m.mailbox_id WHERE m.modseq > 11 ORDER BY m.modseq",
            "SELECT mb.guid, m.uid FROM mailbox mb CROSS JOIN message m ON mb.id = m.mailbox_id WHERE m.modseq <= 11",
        ] {
            let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = st
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert!(
                plan.iter()
                    .any(|p| p.contains("message_modseq (mailbox_id=? AND modseq")),
                "{sql}: {plan:?}"
            );
        }
    }
}

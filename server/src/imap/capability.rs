//! The commands that describe the server: RFC 3501 §6.1.1 CAPABILITY, RFC
//! 2971 ID and RFC 2342 NAMESPACE.

use super::connection::Connection;
use super::outcome::Outcome;

/// The capability list (RFC 3501 §7.2.1) for a session in this state.
pub fn capabilities(conn: &Connection, logged_in: bool) -> String {
    // RFC 9051 §7.2.2: IMAP4rev2 beside IMAP4rev1 (`revision.rs`).
    let mut caps = vec!["IMAP4rev1", "IMAP4rev2"];
    if !logged_in {
        if conn.ctx.tls.is_some() && !conn.is_tls() {
            caps.push("STARTTLS");
        }
        if conn.plaintext_ok() {
            caps.push("AUTH=PLAIN");
            caps.push("SASL-IR");
        } else {
            caps.push("LOGINDISABLED");
        }
    }
    caps.extend([
        "LITERAL+",
        "ID",
        "ENABLE",
        "IDLE",
        "NAMESPACE",
        "UNSELECT",
        "UIDPLUS",
        "MOVE",
        "CHILDREN",
        "SPECIAL-USE",
        "CREATE-SPECIAL-USE",
        "LIST-EXTENDED",
        "LIST-STATUS",
        "BINARY",
        "CONDSTORE",
        "QRESYNC",
        "COMPRESS=DEFLATE",
        "QUOTA",
        "QUOTA=RES-STORAGE",
        "QUOTA=RES-MESSAGE",
        "ESEARCH",
        "SEARCHRES",
        "STATUS=SIZE",
        "OBJECTID",
        "MULTIAPPEND",
        "SAVEDATE",
        "SORT",
        "SORT=DISPLAY",
        "ESORT",
        "THREAD=ORDEREDSUBJECT",
        "THREAD=REFERENCES",
    ]);
    let limit = format!("APPENDLIMIT={}", conn.ctx.config.max_literal_size);
    let mut s = caps.join(" ");
    s.push(' ');
    s.push_str(&limit);
    s
}

// RFC 2971 §3.1: ID.
pub fn id(conn: &mut Connection) -> Outcome {
    conn.untagged("ID (\"name\" \"cove\" \"vendor\" \"cove\")");
    Outcome::ok("ID completed")
}

// RFC 2342 §5: NAMESPACE (one personal namespace, "." as delimiter).
pub fn namespace(conn: &mut Connection) -> Outcome {
    conn.untagged("NAMESPACE ((\"\" \".\")) NIL NIL");
    Outcome::ok("NAMESPACE completed")
}

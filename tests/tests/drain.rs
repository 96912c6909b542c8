//! `cove node drain`: `/health` turns 503 at once (proxies and the other
//! nodes stop sending new sessions), and after the grace the IMAP sessions
//! open here (one in IDLE, one between commands) and POP3 sessions are told
//! to reconnect; `cove node undrain` makes the node serve again.

use std::time::Duration;

use cove_tests::{IMAP_CONFIG, TestServer, eventually};

const USER: &str = "a@x.org";
const PASS: &str = "pw";

#[test]
fn a_drained_node_answers_503_and_sends_its_clients_away() {
    let s = TestServer::start(&format!(
        "{IMAP_CONFIG}\n[pop3]\nlisten = [\"127.0.0.1:0\"]\n\n[http]\nlisten = [\"127.0.0.1:0\"]\n"
    ));
    s.add_user_with_password(USER, PASS);
    assert_eq!(s.http("GET", "/health"), (200, "serving\n".to_string()));

    let mut idle = s.imap_login(USER, PASS);
    idle.cmd_ok("a1 SELECT INBOX");
    idle.send("a2 IDLE");
    assert!(idle.read_response().starts_with("+ "), "IDLE accepted");
    let mut between = s.imap_login(USER, PASS);
    let mut pop = cove_tests::Client::connect(s.addr_of("pop3"));
    let greeting = pop.read_line().unwrap().unwrap();
    assert!(greeting.starts_with("+OK"), "{greeting}");

    let out = s.cli_running(&["node", "drain", "--grace", "1"]);
    let shown = cove_tests::text(&out.stdout);
    assert!(
        out.status.success() && shown.contains("draining"),
        "{out:?}"
    );
    assert_eq!(s.http("GET", "/health").0, 503, "no new sessions");

    // After the grace: BYE [UNAVAILABLE] in IDLE and between commands, an
    // -ERR [SYS/TEMP] for POP3, and the connections close.
    let bye = idle.read_response();
    assert!(
        bye.starts_with("* BYE [UNAVAILABLE]") && bye.contains("drained"),
        "{bye}"
    );
    let bye = between.read_response();
    assert!(bye.starts_with("* BYE [UNAVAILABLE]"), "{bye}");
    let err = pop.read_line().unwrap().unwrap_or_default();
    assert!(err.starts_with("-ERR [SYS/TEMP]"), "{err}");
    assert!(pop.is_closed());

    // Undrained: serving again, new sessions work.
    assert!(s.cli_running(&["node", "undrain"]).status.success());
    assert_eq!(s.http("GET", "/health").0, 200);
    let mut again = s.imap_login(USER, PASS);
    again.cmd_ok("b1 NOOP");
    assert!(
        eventually(Duration::from_secs(5), || s
            .logged("open IMAP and POP3 sessions told to reconnect")
            .then_some(()))
        .is_some()
    );
}

//! `/metrics` counts what the listeners do: sessions open per protocol,
//! logins and deliveries by result, and how POP3 read what it sent.

mod pop3_common;

use cove_tests::{IMAP_CONFIG, TestServer, message, metric as sample};
use pop3_common::{PASS, POP3_CONFIG, USER, logged_in};

#[test]
fn listeners_count_sessions_logins_deliveries_and_pop3_reads() {
    let s = TestServer::start(&format!(
        "{IMAP_CONFIG}{POP3_CONFIG}\n[http]\nlisten = [\"127.0.0.1:0\"]\n"
    ));
    s.add_user_with_password(USER, PASS);
    let metrics = || {
        let (status, body) = s.http("GET", "/metrics");
        assert_eq!(status, 200);
        body
    };
    let m = metrics();
    assert_eq!(sample(&m, "cove_sessions_open{proto=\"pop3\"}"), 0);
    assert_eq!(sample(&m, "cove_lmtp_deliveries_total{result=\"ok\"}"), 0);

    s.deliver_to(USER, &message("a", "one"));
    s.deliver_to(USER, &message("b", "two"));
    let mut imap = s.imap();
    imap.cmd("A1 LOGIN p@x.org wrong");
    let mut p = logged_in(&s);
    assert!(p.cmd("RETR 1").ends_with(" octets"));
    p.raw_body();
    assert!(p.cmd("TOP 2 0").starts_with("+OK"));
    p.raw_body();

    let m = metrics();
    assert_eq!(sample(&m, "cove_sessions_open{proto=\"pop3\"}"), 1);
    assert_eq!(sample(&m, "cove_sessions_open{proto=\"imap\"}"), 1);
    assert_eq!(sample(&m, "cove_lmtp_deliveries_total{result=\"ok\"}"), 2);
    assert_eq!(
        sample(&m, "cove_logins_total{proto=\"pop3\",result=\"ok\"}"),
        1
    );
    assert_eq!(
        sample(&m, "cove_logins_total{proto=\"imap\",result=\"failed\"}"),
        1
    );
    assert_eq!(
        sample(&m, "cove_logins_total{proto=\"imap\",result=\"ok\"}"),
        0
    );
    let cached = sample(&m, "cove_pop3_messages_sent_total{read=\"page_cache\"}");
    let blocking = sample(&m, "cove_pop3_messages_sent_total{read=\"blocking_pool\"}");
    assert_eq!(cached + blocking, 2);
    // Just delivered, so in the page cache wherever the kernel can say so.
    if sample(&m, "cove_cached_reads_available") == 1 {
        assert_eq!(cached, 2);
    }

    assert!(p.cmd("QUIT").starts_with("+OK"));
    drop(p);
    drop(imap);
    cove_tests::eventually(std::time::Duration::from_secs(10), || {
        let m = metrics();
        (sample(&m, "cove_sessions_open{proto=\"pop3\"}") == 0
            && sample(&m, "cove_sessions_open{proto=\"imap\"}") == 0)
            .then_some(())
    })
    .expect("sessions counted out when they end");
}

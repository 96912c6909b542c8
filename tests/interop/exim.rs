//! Exim in front of four cove nodes (two pairs), with the router and
//! transport of the README's "High availability" section: the router asks
//! cove over `${readsocket}` (the line protocol on the socketmap listener)
//! whether the mailbox exists and which node takes its mail now, and an
//! LMTP transport delivers there.
//!
//! Exim is a private instance: its own configuration, spool and log in a
//! temp dir, fed SMTP on standard input (`-bs`) and delivering in the
//! foreground (`-odi`). Debian's exim4 packages conflict with postfix, so
//! CI unpacks them into /opt/exim (`dpkg -x`) and the test runs that
//! binary; an `exim4` on PATH is used first.
//!
//! It proves: mail for users of both pairs reaches each user's preferred
//! node; an unknown address is refused at RCPT; after `kill -9` of a
//! preferred node the next message reaches the peer (Exim routes again on
//! each attempt), with no bounce and an empty queue.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cove_tests::cluster::{Fleet, one_user_per_node, preferred};
use cove_tests::{eventually, run_bounded, text};

use crate::common::{announce, program, root_for, run, scratch_dir};

/// Where CI unpacks Debian's exim4 packages.
const UNPACKED: &str = "/opt/exim";
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The router and transport the README gives operators, asking cove's
/// line protocol at `cove` (`inet:IP:PORT`).
pub fn routers_and_transport(cove: &str) -> String {
    format!(
        r#"begin routers

# cove cannot tell yet (its pair is down, or it has not swapped user
# lists with its peer since the link came up): try again later.
cove_unsure:
  driver = redirect
  allow_defer
  condition = ${{if or{{ \
    {{match{{${{readsocket{{{cove}}}{{mailbox $local_part@$domain\n}}{{5s}}{{}}{{temp no answer}}}}}}{{\N^temp\N}}}} \
    {{match{{${{readsocket{{{cove}}}{{transport $local_part@$domain\n}}{{5s}}{{}}{{temp no answer}}}}}}{{\N^temp\N}}}} }}}}
  data = :defer: cove cannot tell yet where $local_part@$domain lives

# The mailbox exists: deliver to the node cove names ("lmtp IP PORT").
cove:
  driver = manualroute
  condition = ${{if match{{${{readsocket{{{cove}}}{{mailbox $local_part@$domain\n}}{{5s}}{{}}{{}}}}}}{{\N^yes\N}}}}
  route_data = ${{if match{{${{readsocket{{{cove}}}{{transport $local_part@$domain\n}}{{5s}}{{}}{{}}}}}}{{\N^lmtp (\S+) (\d+)\N}}{{$1::$2}}fail}}
  transport = cove_lmtp
  self = send

begin transports

cove_lmtp:
  driver = smtp
  protocol = lmtp
  # The default when route_data names no port (and /etc/services may
  # lack "lmtp").
  port = 24
  allow_localhost
"#
    )
}

/// The exim binary: `exim4` on PATH, else the unpacked one.
fn exim_program() -> Option<PathBuf> {
    let unpacked = Path::new(UNPACKED).join("usr/sbin/exim4");
    if unpacked.is_file() {
        return Some(unpacked);
    }
    program("exim4", "exim4-daemon-light (unpacked into /opt/exim)")
}

/// A private Exim: configuration, spool and log in a temp dir.
struct Exim {
    dir: tempfile::TempDir,
    exim: PathBuf,
}

impl Exim {
    fn new(exim: PathBuf, cove: &str) -> Exim {
        let dir = scratch_dir("cove-exim-");
        let root = dir.path();
        for sub in ["spool", "log"] {
            fs::create_dir(root.join(sub)).expect("mkdir");
            crate::common::run_ok({
                let mut c = Command::new("chown");
                c.arg("mail:mail").arg(root.join(sub));
                c
            });
        }
        let r = root.display();
        let config = format!(
            "exim_user = mail
exim_group = mail
primary_hostname = mx.test
spool_directory = {r}/spool
log_file_path = {r}/log/%slog
keep_environment =
smtp_enforce_sync = false
log_selector = +outgoing_port
acl_smtp_rcpt = check_rcpt

begin acl

check_rcpt:
  require verify = recipient
  accept

{}
begin retry

*  *  F,1h,1s
",
            routers_and_transport(cove)
        );
        fs::write(root.join("exim.conf"), config).expect("write exim.conf");
        Exim { dir, exim }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.exim);
        c.arg("-C").arg(self.dir.path().join("exim.conf"));
        if self.exim.starts_with(UNPACKED) {
            c.env(
                "LD_LIBRARY_PATH",
                Path::new(UNPACKED).join("usr/lib/x86_64-linux-gnu"),
            );
        }
        c
    }

    fn log(&self) -> String {
        let main = fs::read_to_string(self.dir.path().join("log/mainlog")).unwrap_or_default();
        let panic = fs::read_to_string(self.dir.path().join("log/paniclog")).unwrap_or_default();
        format!("{main}{panic}")
    }

    /// One SMTP session on standard input (`-bs`), delivering in the
    /// foreground (`-odi`): Exim's replies.
    fn smtp(&self, session: &str) -> String {
        let mut c = self.command();
        c.args(["-bs", "-odi"]);
        let out = run_bounded(c, Some(session.as_bytes()), Duration::from_secs(60));
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }

    /// Send one message to `rcpt`; Exim must accept it.
    fn submit(&self, rcpt: &str, id: &str) {
        let replies = self.smtp(&format!(
            "EHLO client.test\r\nMAIL FROM:<s@c.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n\
             From: s@c.test\r\nTo: {rcpt}\r\nMessage-ID: {id}\r\nSubject: {id}\r\n\r\nHi.\r\n.\r\nQUIT\r\n"
        ));
        if !replies.contains("250 OK id=") {
            let mut c = self.command();
            c.args(["-d+route+expand", "-bt", rcpt]);
            let out = run(c);
            panic!(
                "Exim did not take the message for {rcpt}:\n{replies}\n{}\n{}{}",
                self.log(),
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }

    /// Wait until Exim's log shows `rcpt` delivered to cove's LMTP on
    /// `port`, running the queue between looks.
    fn delivered(&self, rcpt: &str, port: u16) -> String {
        let want = format!("=> {rcpt} R=cove T=cove_lmtp H=127.0.0.1 [127.0.0.1]:{port} ");
        eventually(DELIVERY_TIMEOUT, || {
            let found = self
                .log()
                .lines()
                .find(|l| l.contains(&want))
                .map(str::to_string);
            if found.is_none() {
                let mut c = self.command();
                c.args(["-qff", "-odi"]);
                run(c);
            }
            found
        })
        .unwrap_or_else(|| panic!("Exim did not deliver to {rcpt} on {port}:\n{}", self.log()))
    }

    fn queue_count(&self) -> String {
        let mut c = self.command();
        c.arg("-bpc");
        text(&run(c).stdout).trim().to_string()
    }
}

#[test]
fn exim_routes_through_coves_readsocket_lookups_and_fails_over_on_kill9() {
    let Some(exim) = exim_program().filter(|_| root_for("exim")) else {
        return;
    };
    let users = one_user_per_node();
    let mut fleet = Fleet::start(&users);
    let exim = Exim::new(exim, &format!("inet:{}", fleet.socketmap_addr(2)));

    for (k, u) in users.iter().enumerate() {
        let id = format!("<exim-{k}@exim.test>");
        exim.submit(u, &id);
        let node = preferred(u);
        let line = exim.delivered(u, fleet.ports[node].lmtp);
        assert!(line.contains("C=\"250 2.0.0"), "{line}");
        fleet.await_message(node, u, &id);
    }

    // Unknown addresses are refused at RCPT.
    let replies = exim.smtp(
        "EHLO client.test\r\nMAIL FROM:<s@c.test>\r\nRCPT TO:<nobody@a.test>\r\n\
         RCPT TO:<nobody@b.test>\r\nQUIT\r\n",
    );
    assert_eq!(
        replies.matches("550 Unrouteable address").count(),
        2,
        "{replies}"
    );

    // Alice's message is on s2 too before s1 dies.
    let alice = &users[0];
    fleet.await_message(1, alice, "<exim-0@exim.test>");

    fleet.nodes[0].kill9();
    let killed = Instant::now();
    exim.submit(alice, "<exim-after@exim.test>");
    exim.delivered(alice, fleet.ports[1].lmtp);
    announce(&format!(
        "exim: kill -9 of the preferred node to Exim's next successful delivery (to its peer): {:?}",
        killed.elapsed()
    ));
    fleet.await_message(1, alice, "<exim-after@exim.test>");
    let log = exim.log();
    assert!(!log.contains(" ** "), "a bounce:\n{log}");
    assert_eq!(exim.queue_count(), "0", "{log}");
}

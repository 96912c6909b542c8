//! Postfix in front of cove, configured the way the README tells operators
//! to: `virtual_mailbox_domains` for the domain and `virtual_transport =
//! lmtp:inet:<cove>`. A private Postfix instance (its own config, queue and
//! data directories in a temp dir, smtpd on a free loopback port, its log
//! in a file there) takes a message over SMTP and delivers it to cove.
//!
//! It proves: a message for two cove users lands in both Maildirs as one
//! stored file (one inode, one blob); a message for a user cove does not
//! know is bounced by Postfix with cove's own `550 5.1.1` text, and the
//! bounce comes back through Postfix into the sender's cove mailbox.

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cove_tests::{Client, TestServer, assert_reply, dot_stuff, eventually, text};

use crate::common::{
    free_port, header_value, program, run, run_ok, scratch_dir, wait_for_listener,
};

/// How long Postfix gets to deliver (and bounce) a queued message.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// A private Postfix instance. Dropping it stops it.
pub struct Postfix {
    dir: tempfile::TempDir,
    postfix: PathBuf,
    smtp_port: u16,
    running: bool,
}

impl Postfix {
    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("maillog")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Write the configuration and `postfix start` it, delivering
    /// `domain` to cove's LMTP listener.
    fn start(postfix: PathBuf, lmtp: std::net::SocketAddr, domain: &str) -> Postfix {
        Postfix::start_routing(
            postfix,
            &format!("virtual_mailbox_domains = {domain}\nvirtual_transport = lmtp:inet:{lmtp}\n"),
        )
    }

    /// [`Postfix::start`] with `routing`, the main.cf lines that say which
    /// domains and mailboxes are cove's and where their mail goes.
    pub fn start_routing(postfix: PathBuf, routing: &str) -> Postfix {
        let dir = scratch_dir("cove-postfix-");
        let root = dir.path();
        for sub in ["etc", "spool", "lib"] {
            fs::create_dir(root.join(sub)).expect("mkdir");
        }
        // The master's lock and the daemons' state live in data_directory,
        // which must belong to mail_owner.
        run_ok({
            let mut c = Command::new("chown");
            c.arg("postfix").arg(root.join("lib"));
            c
        });
        let smtp_port = free_port();
        let r = root.display();
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {r}/spool
data_directory = {r}/lib
maillog_file = {r}/maillog
maillog_file_prefixes = {r}
myhostname = mx.test
mydomain = test
myorigin = mx.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
smtputf8_enable = no
lmtp_destination_recipient_limit = 1000
# What the README tells operators:
{routing}"
        );
        fs::write(root.join("etc/main.cf"), main_cf).expect("write main.cf");
        // Debian's master.cf chroots most daemons into the queue directory;
        // this one chroots nothing, so no copy of /etc is needed there.
        let master_cf = format!(
            "127.0.0.1:{smtp_port} inet n - n - - smtpd
pickup     unix n - n 60 1 pickup
cleanup    unix n - n - 0 cleanup
qmgr       unix n - n 300 1 qmgr
rewrite    unix - - n - - trivial-rewrite
bounce     unix - - n - 0 bounce
defer      unix - - n - 0 bounce
trace      unix - - n - 0 bounce
verify     unix - - n - 1 verify
flush      unix n - n 1000? 0 flush
proxymap   unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp       unix - - n - - smtp
relay      unix - - n - - smtp
showq      unix n - n - - showq
error      unix - - n - - error
retry      unix - - n - - error
discard    unix - - n - - discard
lmtp       unix - - n - - lmtp
anvil      unix - - n - 1 anvil
scache     unix - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
"
        );
        fs::write(root.join("etc/master.cf"), master_cf).expect("write master.cf");
        let mut pf = Postfix {
            dir,
            postfix,
            smtp_port,
            running: false,
        };
        // Postfix reports a bad configuration on a terminal or in its log,
        // not on a pipe: on failure, show the log.
        let out = run(pf.command("start"));
        pf.running = true;
        assert!(
            out.status.success() && wait_for_listener(smtp_port, Duration::from_secs(20)),
            "postfix start failed ({}):\n{}{}\n--- maillog ---\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr),
            pf.log()
        );
        pf
    }

    fn command(&self, verb: &str) -> Command {
        let mut c = Command::new(&self.postfix);
        c.arg("-c").arg(self.config_dir()).arg(verb);
        c
    }

    /// `postfix stop`, which waits for the master to exit.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let out = run(self.command("stop"));
        if !out.status.success() {
            let _ = run(self.command("abort"));
            panic!(
                "postfix stop failed ({}):\n{}{}",
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }

    /// What `postqueue -p` says about this instance's queue.
    pub fn queue(&self) -> String {
        let postqueue = self.postfix.with_file_name("postqueue");
        let mut c = Command::new(postqueue);
        c.arg("-c").arg(self.config_dir()).arg("-p");
        let out = run(c);
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }

    /// An SMTP session with smtpd, after EHLO.
    pub fn smtp(&self) -> Client<TcpStream> {
        let mut c = Client::new(
            TcpStream::connect(("127.0.0.1", self.smtp_port)).expect("connect to postfix smtpd"),
        );
        c.get_mut()
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        assert_reply(&c.read_reply(), "220 mx.test");
        assert_reply(&c.cmd("EHLO client.test"), "250");
        c
    }

    /// Submit one message over SMTP; Postfix must queue it.
    pub fn submit(&self, from: &str, rcpts: &[&str], message: &str) {
        let mut c = self.smtp();
        assert_reply(&c.cmd(&format!("MAIL FROM:<{from}>")), "250 2.1.0");
        for r in rcpts {
            assert_reply(&c.cmd(&format!("RCPT TO:<{r}>")), "250 2.1.5");
        }
        assert_reply(&c.cmd("DATA"), "354");
        c.send_raw(&dot_stuff(message)).expect("send the message");
        assert_reply(&c.read_reply(), "250 2.0.0 Ok: queued as");
        assert_reply(&c.cmd("QUIT"), "221");
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if self.running {
            self.running = false;
            let _ = run(self.command("stop"));
        }
        if std::thread::panicking() {
            eprintln!("---- postfix maillog ----\n{}---- end ----", self.log());
        }
    }
}

/// The files of a Maildir folder whose Message-ID is `id`.
fn files_with_message_id(folder: &Path, id: &str) -> Vec<PathBuf> {
    crate::common::maildir_message_files(folder)
        .into_iter()
        .filter(|f| {
            fs::read(f)
                .ok()
                .and_then(|b| header_value(&b, "Message-ID"))
                .is_some_and(|m| m == id)
        })
        .collect()
}

/// The `postfix` program, when it is installed and this test may start
/// an instance (as root); otherwise `None` after [`skip_or_fail`].
pub fn postfix_program() -> Option<PathBuf> {
    let postfix = program("postfix", "postfix")?;
    crate::common::root_for("postfix").then_some(postfix)
}

#[test]
fn postfix_delivers_over_lmtp_stored_once_and_bounces_unknown_users_with_coves_550() {
    let Some(postfix) = postfix_program() else {
        return;
    };
    let server = TestServer::start("");
    server.add_users(&["alice@example.com", "bob@example.com"]);
    let mut pf = Postfix::start(postfix, server.lmtp_addr(), "example.com");

    // One message for two users, one for a user cove does not have.
    let both = "From: carol@example.org\r\nTo: alice@example.com, bob@example.com\r\n\
                Subject: to both\r\nMessage-ID: <both@postfix.test>\r\n\r\nHello, both.\r\n";
    pf.submit(
        "carol@example.org",
        &["alice@example.com", "bob@example.com"],
        both,
    );
    let lost = "From: alice@example.com\r\nTo: nobody@example.com\r\n\
                Subject: to nobody\r\nMessage-ID: <lost@postfix.test>\r\n\r\nAnyone?\r\n";
    pf.submit("alice@example.com", &["nobody@example.com"], lost);

    // Postfix reports both deliveries done with cove's 250 (cove answers it
    // once the message and its links are on disk).
    for user in ["alice@example.com", "bob@example.com"] {
        let sent = format!("to=<{user}>, relay=127.0.0.1[127.0.0.1]");
        let line = eventually(DELIVERY_TIMEOUT, || {
            pf.log()
                .lines()
                .find(|l| l.contains(&sent) && l.contains("status=sent"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            panic!(
                "Postfix did not deliver to {user} within {DELIVERY_TIMEOUT:?}\n\
                 postqueue -p:\n{}",
                pf.queue()
            )
        });
        assert!(
            line.contains(&format!("(250 2.0.0 <{user}> Saved as UID")),
            "{line}"
        );
    }

    // Both users have the message, through Postfix (its Received line).
    let inbox_a = server.folder("alice@example.com", "INBOX");
    let inbox_b = server.folder("bob@example.com", "INBOX");
    let copies = eventually(DELIVERY_TIMEOUT, || {
        let a = files_with_message_id(&inbox_a, "<both@postfix.test>");
        let b = files_with_message_id(&inbox_b, "<both@postfix.test>");
        (!a.is_empty() && !b.is_empty()).then_some((a, b))
    });
    let Some((a, b)) = copies else {
        panic!(
            "the message did not reach both Maildirs within {DELIVERY_TIMEOUT:?}\n\
             postqueue -p:\n{}\nmaillog:\n{}",
            pf.queue(),
            pf.log()
        )
    };
    assert_eq!((a.len(), b.len()), (1, 1), "one copy each: {a:?} {b:?}");
    let content = fs::read(&a[0]).expect("read alice's copy");
    assert!(
        text(&content).contains("by mx.test (Postfix)"),
        "not delivered through Postfix:\n{}",
        text(&content)
    );

    // Stored once: both names are links to one blob.
    let meta_a = fs::metadata(&a[0]).unwrap();
    let meta_b = fs::metadata(&b[0]).unwrap();
    assert_eq!(meta_a.ino(), meta_b.ino(), "two inodes: {a:?} {b:?}");
    let names = run_ok({
        let mut c = Command::new("find");
        c.arg(server.data_dir())
            .arg("-inum")
            .arg(meta_a.ino().to_string());
        c
    });
    assert_eq!(
        meta_a.nlink(),
        3,
        "links: alice, bob and the blob; found:\n{names}"
    );
    let blobs_with_inode = server
        .blob_files()
        .iter()
        .filter(|p| fs::metadata(p).is_ok_and(|m| m.ino() == meta_a.ino()))
        .count();
    assert_eq!(blobs_with_inode, 1, "one blob holds the message");

    // Postfix bounced the unknown user with cove's reply at RCPT ...
    let bounced = "said: 550 5.1.1 <nobody@example.com> User unknown (in reply to RCPT TO command)";
    let logged = eventually(DELIVERY_TIMEOUT, || {
        pf.log()
            .lines()
            .find(|l| l.contains("to=<nobody@example.com>") && l.contains("status=bounced"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no bounce for nobody@ in Postfix's log:\n{}", pf.log()));
    assert!(logged.contains(bounced), "{logged}");
    assert!(
        logged.contains(&format!(
            "relay=127.0.0.1[127.0.0.1]:{}",
            server.lmtp_addr().port()
        )),
        "{logged}"
    );

    // ... and its delivery status notification, carrying cove's text, came
    // back through Postfix into the sender's INBOX.
    let dsn = eventually(DELIVERY_TIMEOUT, || {
        crate::common::maildir_message_files(&inbox_a)
            .into_iter()
            .filter_map(|f| fs::read(f).ok())
            .find(|m| {
                header_value(m, "Subject").as_deref() == Some("Undelivered Mail Returned to Sender")
            })
    })
    .unwrap_or_else(|| panic!("no bounce in alice's INBOX:\n{}", pf.log()));
    let dsn = text(&dsn);
    for needle in [
        "Content-Type: message/delivery-status",
        "Final-Recipient: rfc822; nobody@example.com",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.com> User unknown",
        "Message-ID: <lost@postfix.test>",
    ] {
        assert!(dsn.contains(needle), "{needle:?} not in the bounce:\n{dsn}");
    }

    // Nothing left in Postfix's queue (no deferral, no retry).
    let queue = pf.queue();
    assert!(queue.contains("Mail queue is empty"), "{queue}");
    pf.stop();
}

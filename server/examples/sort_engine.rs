//! How long the SORT/THREAD engine (server/src/imap/sort/) takes over a big
//! mailbox, before it is wired to the commands: key extraction from header
//! blocks, their preparation and cached form, each sort key RFC 5256 names for the issue's figures, and both
//! THREAD algorithms. A measurement, not a test:
//!
//! ```text
//! cargo run --release -p cove --example sort_engine [MESSAGES]
//! ```
//!
//! The mailbox is synthetic and deterministic: 1 in 4 messages starts a
//! thread, the others reply to a random earlier message of the last 1,000
//! (References holding its chain, up to 10 ids), subjects from 5,000 topics
//! with Re:/Fwd:/[list] decorations, 2,000 senders, dates spread over a year
//! with 1 in 50 unparsable. Each figure is the median of 5 runs.

use std::time::Instant;

use cove::imap::sort::{self, Algorithm, Candidate, MessageKeys, SortCriterion, SortKey};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the messages before say: each one's References chain (its own id
/// last) and topic.
#[derive(Default)]
struct Mailbox {
    chains: Vec<Vec<String>>,
    topics: Vec<u64>,
}

fn header(i: usize, rng: &mut Rng, mailbox: &mut Mailbox) -> Vec<u8> {
    let id = format!("<{i}.{}@bench.example>", rng.next() % 100_000);
    let (topic, refs) = if i == 0 || rng.below(4) == 0 {
        (rng.below(5_000), Vec::new())
    } else {
        let parent = i - 1 - rng.below(i.min(1_000) as u64) as usize;
        let mut refs = mailbox.chains[parent].clone();
        let keep = refs.len().saturating_sub(10);
        (mailbox.topics[parent], refs.split_off(keep))
    };
    let decoration = ["", "Re: ", "Re: Re: ", "Fwd: ", "[list] Re: "][rng.below(5) as usize];
    let day = 1 + rng.below(28);
    let month = ["Jan", "Mar", "Jun", "Sep", "Nov"][rng.below(5) as usize];
    let date = if rng.below(50) == 0 {
        "sometime last week".to_string()
    } else {
        format!(
            "Mon, {day} {month} 2026 {:02}:{:02}:00 +0100",
            rng.below(24),
            rng.below(60)
        )
    };
    let sender = rng.below(2_000);
    let mut h = format!(
        "From: Sender {sender} <s{sender}@example.org>\r\nTo: list@example.org\r\n\
         Subject: {decoration}Topic number {topic}\r\nDate: {date}\r\nMessage-ID: {id}\r\n"
    );
    if !refs.is_empty() {
        h.push_str(&format!(
            "References: {}\r\nIn-Reply-To: {}\r\n",
            refs.join(" "),
            refs.last().cloned().unwrap_or_default()
        ));
    }
    h.push_str("\r\n");
    let mut chain = refs;
    chain.push(id);
    mailbox.chains.push(chain);
    mailbox.topics.push(topic);
    h.into_bytes()
}

/// The median of 5 runs of `f`, in milliseconds.
fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[2]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut mailbox = Mailbox::default();
    let headers: Vec<Vec<u8>> = (0..n).map(|i| header(i, &mut rng, &mut mailbox)).collect();

    let mut keys: Vec<MessageKeys> = Vec::new();
    let extract = median_ms(|| {
        keys = headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let mut k = sort::header_keys(h);
                k.uid = i as u32 + 1;
                k.internal_date = 1_767_225_600 + i as i64 * 300;
                k.size = 2_000 + h.len() as u64;
                k
            })
            .collect();
    });
    let mut prepared: Vec<Candidate> = Vec::new();
    let prepare = median_ms(|| {
        prepared = keys.iter().map(Candidate::from).collect();
    });
    let encoded: Vec<Vec<u8>> = prepared
        .iter()
        .map(|c| sort::encode_keys(&c.keys))
        .collect();
    let decode = median_ms(|| {
        for e in &encoded {
            std::hint::black_box(sort::decode_keys(e));
        }
    });
    let keys = prepared;
    println!("{n} messages");
    println!("header_keys (parse every header block): {extract:.1} ms");
    println!("SortKeys::prepare (base subjects, case maps, ids): {prepare:.1} ms");
    println!(
        "decode the cached form ({} bytes in all): {decode:.1} ms",
        encoded.iter().map(Vec::len).sum::<usize>()
    );
    for key in [
        SortKey::Arrival,
        SortKey::Date,
        SortKey::Subject,
        SortKey::From,
    ] {
        let criteria = [SortCriterion {
            key,
            reverse: false,
        }];
        let ms = median_ms(|| {
            std::hint::black_box(sort::sort(&keys, &criteria));
        });
        println!("SORT ({key:?}): {ms:.1} ms");
    }
    for algorithm in [Algorithm::References, Algorithm::OrderedSubject] {
        let mut roots = 0;
        let ms = median_ms(|| {
            let threads = sort::thread(&keys, algorithm);
            roots = threads.len();
            std::hint::black_box(sort::write_threads(&threads, |i| i as u32 + 1));
        });
        println!("THREAD {algorithm:?} (with the response text): {ms:.1} ms, {roots} threads");
    }
}

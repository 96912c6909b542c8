//! RFC 5256 §3 THREAD: ORDEREDSUBJECT and REFERENCES, and the response's
//! thread-list syntax (§4).
//!
//! REFERENCES follows the RFC's steps over an arena of containers (a
//! container holds a message, or is a "dummy" standing for a referenced
//! message that is not in the mailbox), linked by parent index and child
//! lists:
//! 1. link each message's references into a parent/child chain without
//!    changing existing links or making loops, then make the message a
//!    child of its last reference (dropping a parent guessed earlier even
//!    when that link would loop);
//! 2. the roots are the containers without a parent;
//! 4. prune dummies (promote their children), bottom-up;
//! 5. merge roots with the same base subject, meeting the roots in date
//!    order (RFC 5256 leaves it open; Dovecot's order, and it decides
//!    which of two originals becomes the parent of a reply);
//! 6. sort every set of siblings by sent date, then the roots (a dummy by
//!    its first child).
//!
//! Every walk is iterative: a reply chain can be as deep as the mailbox.
//! The loop check walks up at most [`MAX_LOOP_CHECK`] ancestors and refuses
//! a link it could not prove safe, so hostile References cannot make the
//! work quadratic in the mailbox.

use std::collections::HashMap;

use super::Candidate;

/// THREAD algorithms (RFC 5256 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    OrderedSubject,
    References,
}

/// A thread tree node: a message (an index into the input) or, at the top
/// level only, a dummy grouping its children. Not `Clone` or `PartialEq`:
/// derived ones would recurse once per level, and a chain can be as deep as
/// the mailbox (its `Drop` is iterative; [`write_threads`] reads it).
#[derive(Debug)]
pub struct ThreadNode {
    pub message: Option<usize>,
    pub children: Vec<ThreadNode>,
}

/// Dropped without recursion: a chain can be as deep as the mailbox.
impl Drop for ThreadNode {
    fn drop(&mut self) {
        let mut stack = std::mem::take(&mut self.children);
        while let Some(mut node) = stack.pop() {
            stack.append(&mut node.children);
        }
    }
}

/// Ancestors walked to prove a new link makes no loop; a link needing more
/// is not made (the message starts a thread of its own instead).
const MAX_LOOP_CHECK: usize = 10_000;

/// RFC 5256 §3 THREAD over `messages` (in mailbox order).
pub fn thread(messages: &[Candidate], algorithm: Algorithm) -> Vec<ThreadNode> {
    let mut arena = match algorithm {
        Algorithm::OrderedSubject => ordered_subject(messages),
        Algorithm::References => references(messages),
    };
    arena.sort_siblings(messages);
    arena.into_trees()
}

#[derive(Debug, Default)]
struct Container {
    message: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

#[derive(Default)]
struct Arena {
    nodes: Vec<Container>,
    roots: Vec<usize>,
}

impl Arena {
    fn add(&mut self, message: Option<usize>) -> usize {
        self.nodes.push(Container {
            message,
            ..Container::default()
        });
        self.nodes.len() - 1
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            self.nodes[p].children.retain(|&c| c != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    /// Whether `ancestor` is `node` or above it; `None` when the walk gave
    /// up (treated as "yes" by callers).
    fn is_ancestor(&self, ancestor: usize, node: usize) -> Option<bool> {
        let mut at = Some(node);
        for _ in 0..MAX_LOOP_CHECK {
            match at {
                None => return Some(false),
                Some(n) if n == ancestor => return Some(true),
                Some(n) => at = self.nodes[n].parent,
            }
        }
        None
    }

    /// Whether linking `child` under `parent` is safe (no loop).
    fn may_link(&self, parent: usize, child: usize) -> bool {
        parent != child
            && (self.nodes[child].children.is_empty()
                || self.is_ancestor(child, parent) == Some(false))
    }

    /// The sort key of a node: its message's, or its first child's.
    fn date_key(&self, node: usize, messages: &[Candidate]) -> (i64, usize) {
        let first_message = self.nodes[node].message.or_else(|| {
            self.nodes[node]
                .children
                .first()
                .and_then(|&c| self.nodes[c].message)
        });
        match first_message {
            Some(m) => (messages[m].sort_date(), m),
            None => (i64::MAX, usize::MAX),
        }
    }

    /// Step 6: siblings by sent date (ties and unknown dates: mailbox
    /// order), children before the roots so a dummy sorts by its first
    /// child.
    fn sort_siblings(&mut self, messages: &[Candidate]) {
        for n in 0..self.nodes.len() {
            let mut children = std::mem::take(&mut self.nodes[n].children);
            children.sort_by_key(|&c| self.date_key(c, messages));
            self.nodes[n].children = children;
        }
        let mut roots = std::mem::take(&mut self.roots);
        roots.sort_by_key(|&r| self.date_key(r, messages));
        self.roots = roots;
    }

    fn into_trees(self) -> Vec<ThreadNode> {
        // Built bottom-up from a pre-order list, without recursion.
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<usize> = self.roots.iter().rev().copied().collect();
        while let Some(n) = stack.pop() {
            order.push(n);
            stack.extend(self.nodes[n].children.iter().rev());
        }
        let mut built: Vec<Option<ThreadNode>> = (0..self.nodes.len()).map(|_| None).collect();
        for &n in order.iter().rev() {
            let children = self.nodes[n]
                .children
                .iter()
                .filter_map(|&c| built[c].take())
                .collect();
            built[n] = Some(ThreadNode {
                message: self.nodes[n].message,
                children,
            });
        }
        self.roots.iter().filter_map(|&r| built[r].take()).collect()
    }
}

/// ORDEREDSUBJECT: by base subject then sent date; each subject's first
/// message is the parent of the others (all siblings).
fn ordered_subject(messages: &[Candidate]) -> Arena {
    let subjects: Vec<&str> = messages.iter().map(|m| &*m.keys.subject).collect();
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_by(|&a, &b| {
        (subjects[a], messages[a].sort_date(), a).cmp(&(subjects[b], messages[b].sort_date(), b))
    });
    let mut arena = Arena::default();
    let mut current: Option<(usize, &str)> = None;
    for m in order {
        let node = arena.add(Some(m));
        match current {
            Some((parent, subject)) if subject == subjects[m] => arena.link(parent, node),
            _ => {
                arena.roots.push(node);
                current = Some((node, subjects[m]));
            }
        }
    }
    arena
}

/// The `<...>` message ids in a header value, in order (an id holding a
/// space or an unclosed `<` is skipped).
pub(super) fn message_ids(value: &str) -> Vec<&str> {
    let mut ids = Vec::new();
    let mut start = None;
    for (i, c) in value.char_indices() {
        match c {
            '<' => start = Some(i),
            ' ' | '\t' => start = None,
            '>' => {
                if let Some(s) = start.take()
                    && i > s + 1
                {
                    ids.push(&value[s..=i]);
                }
            }
            _ => {}
        }
    }
    ids
}

fn references(messages: &[Candidate]) -> Arena {
    let mut arena = Arena::default();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    // Step 1.
    for (m, keys) in messages.iter().enumerate() {
        let own_id = keys.keys.message_id.as_deref();
        // 1A: the references chain.
        let mut previous: Option<usize> = None;
        for id in keys.keys.parent_ids() {
            let node = *by_id.entry(id).or_insert_with(|| arena.add(None));
            if let Some(parent) = previous
                && arena.nodes[node].parent.is_none()
                && arena.may_link(parent, node)
            {
                arena.link(parent, node);
            }
            previous = Some(node);
        }
        // 1B: the message's own container (a second message with the same
        // id gets a container of its own).
        let node = match own_id.and_then(|id| by_id.get(id).copied()) {
            Some(existing) if arena.nodes[existing].message.is_none() => {
                arena.nodes[existing].message = Some(m);
                existing
            }
            Some(_) | None => {
                let node = arena.add(Some(m));
                if let Some(id) = own_id {
                    by_id.entry(id).or_insert(node);
                }
                node
            }
        };
        // 1C: its parent is the last reference. A parent guessed from
        // earlier References goes first, even when the new link cannot be
        // made (it would make a loop, e.g. the message lists its own id
        // before the last one): the message is then a root, as in Dovecot.
        match previous {
            Some(parent) if arena.may_link(parent, node) => arena.link(parent, node),
            _ => arena.unlink(node),
        }
    }
    // Step 2 (step 3, dropping the id table, is the end of `by_id`).
    arena.roots = (0..arena.nodes.len())
        .filter(|&n| arena.nodes[n].parent.is_none())
        .collect();
    prune_dummies(&mut arena);
    // Step 5 meets the roots in date order (a dummy by its first child):
    // which of two same-subject roots becomes the parent depends on it, and
    // RFC 5256 leaves the order open. Dovecot's is this one.
    arena.sort_siblings(messages);
    group_by_subject(&mut arena, messages);
    arena
}

/// Step 4, bottom-up: a dummy without children goes; a dummy with children
/// is replaced by them, except at the root level where it stays unless it
/// has only one child.
fn prune_dummies(arena: &mut Arena) {
    let mut order = Vec::with_capacity(arena.nodes.len());
    let mut stack = arena.roots.clone();
    while let Some(n) = stack.pop() {
        order.push(n);
        stack.extend(arena.nodes[n].children.iter().copied());
    }
    for &n in order.iter().rev() {
        let Some(parent) = arena.nodes[n].parent else {
            continue;
        };
        if arena.nodes[n].message.is_some() {
            continue;
        }
        let children = std::mem::take(&mut arena.nodes[n].children);
        let siblings = &mut arena.nodes[parent].children;
        let at = siblings
            .iter()
            .position(|&c| c == n)
            .unwrap_or(siblings.len());
        siblings.splice(at..(at + 1).min(siblings.len()), children.iter().copied());
        for c in children {
            arena.nodes[c].parent = Some(parent);
        }
        arena.nodes[n].parent = None;
    }
    let roots = std::mem::take(&mut arena.roots);
    for r in roots {
        let node = &mut arena.nodes[r];
        match (node.message, node.children.len()) {
            (None, 0) => {}
            (None, 1) => {
                let child = node.children.pop().unwrap_or(r);
                arena.nodes[child].parent = None;
                arena.roots.push(child);
            }
            _ => arena.roots.push(r),
        }
    }
}

/// Step 5: roots with the same (non-empty) base subject are merged.
fn group_by_subject(arena: &mut Arena, messages: &[Candidate]) {
    let subject_of = |arena: &Arena, r: usize| {
        let node = &arena.nodes[r];
        let m = node
            .message
            .or_else(|| node.children.first().and_then(|&c| arena.nodes[c].message))?;
        let keys = &messages[m].keys;
        (!keys.subject.is_empty()).then_some((&*keys.subject, keys.reply_or_forward))
    };
    let subjects: Vec<Option<(&str, bool)>> =
        arena.roots.iter().map(|&r| subject_of(arena, r)).collect();
    let is_dummy = |arena: &Arena, r: usize| arena.nodes[r].message.is_none();
    // 5A-5C: the container each subject merges into.
    let mut table: HashMap<&str, (usize, bool)> = HashMap::new();
    for (&r, subject) in arena.roots.iter().zip(&subjects) {
        let Some((text, reply)) = subject else {
            continue;
        };
        let better = match table.get(text) {
            None => true,
            Some(&(t, t_reply)) => {
                (is_dummy(arena, r) && !is_dummy(arena, t))
                    || (!is_dummy(arena, t) && t_reply && !*reply)
            }
        };
        if better {
            table.insert(*text, (r, *reply));
        }
    }
    // 5D: merge. Root order does not matter here: step 6 sorts the roots.
    let roots = std::mem::take(&mut arena.roots);
    let mut kept = Vec::with_capacity(roots.len());
    for (&r, subject) in roots.iter().zip(&subjects) {
        let Some((text, reply)) = subject else {
            kept.push(r);
            continue;
        };
        let Some(&(t, t_reply)) = table.get(text).filter(|&&(t, _)| t != r) else {
            kept.push(r);
            continue;
        };
        match (is_dummy(arena, t), is_dummy(arena, r)) {
            (true, true) => {
                for c in std::mem::take(&mut arena.nodes[r].children) {
                    arena.nodes[c].parent = None;
                    arena.link(t, c);
                }
            }
            (true, false) => arena.link(t, r),
            // A dummy always wins the table; kept as is for safety.
            (false, true) => kept.push(r),
            (false, false) if !t_reply && *reply => arena.link(t, r),
            (false, false) => {
                // Both replies or neither: siblings under a new dummy, which
                // takes the table's place (and `t`'s among the roots).
                let dummy = arena.add(None);
                arena.link(dummy, t);
                arena.link(dummy, r);
                kept.push(dummy);
                table.insert(text, (dummy, false));
            }
        }
    }
    // Roots merged under another (including table entries merged before or
    // after their own turn) have a parent now.
    kept.retain(|&k| arena.nodes[k].parent.is_none());
    arena.roots = kept;
}

/// RFC 5256 §4 thread-list syntax: `(3 6 (4 23)(44 7 96))((1)(2))`, each
/// message written as `id(index)` (its UID or sequence number).
pub fn write_threads(threads: &[ThreadNode], id: impl Fn(usize) -> u32) -> String {
    enum Step<'a> {
        Open(&'a ThreadNode, bool),
        Text(&'static str),
    }
    let mut out = String::new();
    let mut stack: Vec<Step<'_>> = Vec::new();
    for root in threads.iter().rev() {
        stack.push(Step::Text(")"));
        stack.push(Step::Open(root, false));
        stack.push(Step::Text("("));
    }
    // `Open(node, continues)`: write the node's chain; `continues` when it
    // follows its parent on the same chain (a space before it).
    while let Some(step) = stack.pop() {
        let (node, continues) = match step {
            Step::Text(t) => {
                out.push_str(t);
                continue;
            }
            Step::Open(node, continues) => (node, continues),
        };
        if let Some(m) = node.message {
            if continues {
                out.push(' ');
            }
            out.push_str(&id(m).to_string());
        }
        match node.children.as_slice() {
            [] => {}
            [only] if node.message.is_some() => stack.push(Step::Open(only, true)),
            children => {
                if node.message.is_some() {
                    out.push(' ');
                }
                for child in children.iter().rev() {
                    stack.push(Step::Text(")"));
                    stack.push(Step::Open(child, false));
                    stack.push(Step::Text("("));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::MessageKeys;
    use super::*;

    /// A message with a subject, a sent date and threading fields.
    fn msg(subject: &str, date: i64, id: &str, refs: &str, reply_to: &str) -> MessageKeys {
        let field = |v: &str| (!v.is_empty()).then(|| v.to_string());
        MessageKeys {
            subject: subject.into(),
            sent_date: Some(date),
            message_id: field(id),
            references: field(refs),
            in_reply_to: field(reply_to),
            ..MessageKeys::default()
        }
    }

    /// THREAD answered with sequence numbers (index + 1).
    fn threads(messages: &[MessageKeys], algorithm: Algorithm) -> String {
        let candidates: Vec<Candidate> = messages.iter().map(Candidate::from).collect();
        write_threads(&thread(&candidates, algorithm), |i| i as u32 + 1)
    }

    fn leaf(m: usize) -> ThreadNode {
        ThreadNode {
            message: Some(m),
            children: Vec::new(),
        }
    }

    fn node(message: Option<usize>, children: Vec<ThreadNode>) -> ThreadNode {
        ThreadNode { message, children }
    }

    /// RFC 5256 §4's examples of the response syntax.
    #[test]
    fn response_syntax_matches_the_rfc_examples() {
        // (2)(3 6 (4 23)(44 7 96)): 3 parent of 6; 6 parent of 4 and 44;
        // 4 of 23; 44 of 7; 7 of 96.
        let tree = vec![
            leaf(2),
            node(
                Some(3),
                vec![node(
                    Some(6),
                    vec![
                        node(Some(4), vec![leaf(23)]),
                        node(Some(44), vec![node(Some(7), vec![leaf(96)])]),
                    ],
                )],
            ),
        ];
        assert_eq!(
            write_threads(&tree, |m| m as u32),
            "(2)(3 6 (4 23)(44 7 96))"
        );
        // ((3)(5)): 3 and 5 are siblings under a dummy parent.
        let dummy = vec![node(None, vec![leaf(3), leaf(5)])];
        assert_eq!(write_threads(&dummy, |m| m as u32), "((3)(5))");
        assert_eq!(write_threads(&[], |m| m as u32), "");
    }

    #[test]
    fn references_build_parent_chains() {
        let m = [
            msg("Topic", 10, "<a@x>", "", ""),
            msg("Re: Topic", 20, "<b@x>", "<a@x>", "<a@x>"),
            msg("Re: Topic", 30, "<c@x>", "<a@x> <b@x>", ""),
            // No References: the first id of In-Reply-To.
            msg("Re: Topic", 25, "<d@x>", "", "<b@x> (comment) <zz@x>"),
            msg("Other", 5, "<e@x>", "", ""),
        ];
        // Roots by date: 5 (Other, at 5), then 1; 2's children by date: 4
        // (25) before 3 (30).
        assert_eq!(threads(&m, Algorithm::References), "(5)(1 2 (4)(3))");
    }

    #[test]
    fn missing_parents_become_dummies_and_are_pruned() {
        // Two replies to a message not in the mailbox: a dummy root keeps
        // them as siblings.
        let m = [
            msg("Re: gone", 10, "<b@x>", "<gone@x>", ""),
            msg("Re: gone", 20, "<c@x>", "<gone@x>", ""),
        ];
        assert_eq!(threads(&m, Algorithm::References), "((1)(2))");
        // One reply to a missing message: its dummy goes.
        let m = [msg("Re: gone", 10, "<b@x>", "<gone@x>", "")];
        assert_eq!(threads(&m, Algorithm::References), "(1)");
        // A dummy inside a thread is replaced by its children.
        let m = [
            msg("t", 10, "<a@x>", "", ""),
            msg("Re: t", 20, "<c@x>", "<a@x> <gone@x>", ""),
        ];
        assert_eq!(threads(&m, Algorithm::References), "(1 2)");
    }

    #[test]
    fn roots_with_one_base_subject_merge() {
        // A reply without references joins the original.
        let m = [
            msg("Hello", 10, "<a@x>", "", ""),
            msg("Re: hello", 20, "<b@x>", "", ""),
        ];
        assert_eq!(threads(&m, Algorithm::References), "(1 2)");
        // The original found later: the reply still goes under it.
        let m = [
            msg("Re: Hello", 10, "<b@x>", "", ""),
            msg("Hello", 20, "<a@x>", "", ""),
        ];
        assert_eq!(threads(&m, Algorithm::References), "(2 1)");
        // Neither (or both) replies: siblings under a new dummy.
        let m = [
            msg("Hello", 10, "<a@x>", "", ""),
            msg("hello", 20, "<b@x>", "", ""),
            msg("Re: other", 15, "<c@x>", "", ""),
        ];
        assert_eq!(threads(&m, Algorithm::References), "((1)(2))(3)");
        // An empty base subject merges nothing.
        let m = [
            msg("", 10, "<a@x>", "", ""),
            msg("Re:", 20, "<b@x>", "", ""),
        ];
        assert_eq!(threads(&m, Algorithm::References), "(1)(2)");
    }

    #[test]
    fn loops_duplicates_and_junk_ids_are_survived() {
        // a says b is its parent, b says a is: one of the links is refused.
        let m = [
            msg("x", 10, "<a@x>", "<b@x>", ""),
            msg("y", 20, "<b@x>", "<a@x>", ""),
        ];
        let out = threads(&m, Algorithm::References);
        assert!(out == "(1 2)" || out == "(2 1)", "{out}");
        // A message referring to itself, and two messages with one id.
        let m = [
            msg("s", 10, "<a@x>", "<a@x>", ""),
            msg("t", 20, "<a@x>", "", ""),
            msg("Re: t", 30, "<c@x>", "<a@x>", ""),
        ];
        assert_eq!(threads(&m, Algorithm::References), "(1 3)(2)");
        // Junk ids and no ids at all.
        let m = [
            msg("u", 10, "", "<a b> <> junk <x", "<"),
            msg("v", 20, "no brackets", "", ""),
        ];
        assert_eq!(threads(&m, Algorithm::References), "(1)(2)");
        assert_eq!(message_ids("<a@x> <b <c@y>x<>"), ["<a@x>", "<c@y>"]);
    }

    /// Found by the random comparison with Dovecot (sort_dovecot.rs): step
    /// 5 meets the roots by date, so the earliest non-reply becomes the
    /// parent of a later reply, whatever the mailbox order.
    #[test]
    fn subject_merge_meets_roots_by_date() {
        let m = [
            msg("Fwd: t", 2, "<a@x>", "", ""),
            msg("t", 4, "<b@x>", "", ""),
            msg("t", 1, "<c@x>", "", ""),
        ];
        assert_eq!(threads(&m, Algorithm::References), "((3 1)(2))");
    }

    /// Found the same way: a message whose References name its own id
    /// before the last one cannot take the last as parent (a loop); it
    /// loses the parent guessed before and is a root.
    #[test]
    fn own_id_inside_references_makes_a_root() {
        let m = [
            msg("one", 1, "<a@x>", "", ""),
            msg("two", 2, "<b@x>", "<a@x> <b@x> <c@x>", ""),
            msg("three", 3, "<c@x>", "<a@x>", ""),
        ];
        assert_eq!(threads(&m, Algorithm::References), "(1 3)(2)");
    }

    #[test]
    fn ordered_subject_groups_by_base_subject_then_date() {
        let m = [
            msg("Re: apples", 30, "", "", ""),
            msg("Bananas", 10, "", "", ""),
            msg("apples", 20, "", "", ""),
            msg("[list] Apples (fwd)", 40, "", "", ""),
            msg("bananas", 15, "", "", ""),
        ];
        // Apples: 3 (20) parent of 1 (30) and 4 (40); bananas: 2 (10)
        // parent of 5; threads by their first message's date.
        assert_eq!(threads(&m, Algorithm::OrderedSubject), "(2 5)(3 (1)(4))");
    }

    #[test]
    fn unknown_dates_use_internal_date_and_ties_use_mailbox_order() {
        let mut a = msg("a", 0, "", "", "");
        a.sent_date = None;
        a.internal_date = 50;
        let b = msg("b", 50, "", "", "");
        let c = msg("c", 10, "", "", "");
        assert_eq!(threads(&[a, b, c], Algorithm::References), "(3)(1)(2)");
    }

    /// A reply chain as deep as the mailbox is built, pruned, sorted and
    /// written without recursion.
    #[test]
    fn deep_chains_need_no_stack() {
        let n = 100_000;
        let m: Vec<MessageKeys> = (0..n)
            .map(|i| {
                let parent = if i == 0 {
                    String::new()
                } else {
                    format!("<{}@x>", i - 1)
                };
                msg("Re: deep", i, &format!("<{i}@x>"), &parent, "")
            })
            .collect();
        let out = threads(&m, Algorithm::References);
        assert!(out.starts_with("(1 2 3 "), "{}", &out[..20]);
        assert!(
            out.ends_with(&format!(" {n})")),
            "{}",
            &out[out.len() - 20..]
        );
        // One subject: the first message and all the others its children.
        let out = threads(&m, Algorithm::OrderedSubject);
        assert!(out.starts_with("(1 (2)(3)"), "{}", &out[..20]);
        assert!(
            out.ends_with(&format!("({n}))")),
            "{}",
            &out[out.len() - 20..]
        );
    }
}

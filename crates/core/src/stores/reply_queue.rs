//! The reply queue of one pipelined connection, sans I/O: the requests in flight in the order
//! they were sent, the tag each one's replies must echo, the replies read off the bytes as they
//! arrive and matched to their request, and each request's deadline as data. The binding
//! crate's asyncio connections (`wire_link`) own one per connection and do only the I/O and
//! the Python calls around it; [`ReplySink`] is what a request's replies go to, so the
//! connections know no session task type.
//!
//! Replies are never matched to a request by position alone: a request's replies are used only
//! once their tag is its own ([`wire::check_tag`]). A request whose caller gave up keeps its
//! place (its waiter taken, its replies read and dropped), never handing its reply to the
//! request behind it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Request, StoreErrorKind};
use crate::wire::{self, Dialect, Reply, TagCheck};

/// Why requests failed, and of what kind for their store error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: String,
    pub kind: StoreErrorKind,
}

impl Failure {
    pub fn unavailable(cause: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            kind: StoreErrorKind::Unavailable,
        }
    }

    /// Replies that cannot be another request's are not vouched for: out of step.
    pub fn crossed(cause: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            kind: StoreErrorKind::Crossed,
        }
    }
}

/// What a request's replies came to, as its [`ReplySink`] read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The operation has its result.
    Done,
    /// The record needs more than the protocol's one request: the operation is left to run
    /// (on a thread, with the blocking client).
    NeedsFollowUp,
    /// The record is bound to another session id: the operation's result is that error, and
    /// the connection it came over is out of step.
    Crossed,
}

/// The session operation a request was sent for: it gives the request, and reads the replies
/// into its result.
pub trait ReplySink {
    /// The request prepared for the connection, once.
    fn take_request(&self) -> Option<Request>;
    /// Reads the replies (their tag already checked). `Err` when the sink has no request in
    /// flight, a misuse the caller reports.
    fn replied(&self, replies: Vec<Reply>) -> Result<Delivery, String>;
    /// The request failed before its replies could be used: the operation's result is the
    /// store's error for `failure`.
    fn failed(&self, failure: Failure);
}

/// One request sent and not yet answered.
struct Pending<W> {
    /// Who waits; `None` once its deadline passed (it failed then), while its replies are
    /// still to be read and dropped.
    waiter: Option<W>,
    /// The sequence number its replies must echo.
    tag: u64,
    /// How many replies answer it, its tag's included.
    replies: usize,
    got: Vec<Reply>,
    deadline: Instant,
}

/// The requests of one connection, from the bytes written to the replies read; `W` is who
/// waits for a request's replies.
pub struct ReplyQueue<W> {
    dialect: Dialect,
    /// How long a request may wait for its replies, from its send.
    timeout: Duration,
    /// The most bytes one reply may announce.
    reply_limit: usize,
    pending: VecDeque<Pending<W>>,
    /// Bytes received and not yet a whole reply.
    received: Vec<u8>,
    /// Requests queued since the last write: one loop iteration's requests go out in one write.
    outgoing: Vec<u8>,
    /// The tag of the next request.
    next_tag: u64,
}

/// What a batch of received bytes answered.
pub struct Received<W> {
    /// The requests answered, in the order they were sent, with their replies or why they
    /// failed (those whose waiter gave up are left out).
    pub answered: Vec<(W, Result<Vec<Reply>, Failure>)>,
    /// Why the connection cannot be used any more (bytes that are no reply, a reply nobody
    /// asked for, a tag out of step): every request still waiting must fail.
    pub failure: Option<Failure>,
    /// A reply's tag could not be checked: the connection takes no new requests.
    pub unchecked: bool,
}

/// What a deadline check found.
pub struct Expired<W> {
    /// Waiters whose deadline passed, with their failure.
    pub expired: Vec<(W, Failure)>,
    /// How long until the next deadline of a request still waiting, if any.
    pub next: Option<Duration>,
    /// Whether any request is past its deadline (waited for or not): the connection takes
    /// no new requests.
    pub overdue: bool,
}

/// The waiters of a queue emptied at once (see [`ReplyQueue::take_waiters`]).
pub struct Waiters<W>(std::collections::vec_deque::IntoIter<Pending<W>>);

impl<W> Iterator for Waiters<W> {
    type Item = W;

    fn next(&mut self) -> Option<W> {
        self.0.by_ref().find_map(|pending| pending.waiter)
    }
}

impl<W> ReplyQueue<W> {
    pub fn new(dialect: Dialect, timeout: Duration, reply_limit: usize) -> Self {
        Self {
            dialect,
            timeout,
            reply_limit,
            pending: VecDeque::new(),
            received: Vec::new(),
            outgoing: Vec::new(),
            next_tag: 0,
        }
    }

    /// How long a request may wait for its replies.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Queues `bytes` (a request answered by `replies` replies), tagged, for the next write,
    /// and `waiter` for its replies; its deadline is the timeout from `now`.
    pub fn send(&mut self, waiter: W, bytes: &[u8], replies: usize, now: Instant) {
        let tag = self.next_tag;
        self.next_tag += 1;
        wire::write_tagged(self.dialect, bytes, tag, &mut self.outgoing);
        let replies = wire::tagged_replies(self.dialect, replies);
        self.pending.push_back(Pending {
            waiter: Some(waiter),
            tag,
            replies,
            got: Vec::with_capacity(replies),
            deadline: now + self.timeout,
        });
    }

    /// The bytes queued since the last call, to write.
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outgoing)
    }

    /// Reads the replies in `data` (and what came before it), matching them to the requests in
    /// the order they were sent. Stops at the first failure: the connection is then unusable.
    pub fn receive(&mut self, data: &[u8]) -> Received<W> {
        self.received.extend_from_slice(data);
        let mut answered = Vec::new();
        let mut unchecked = false;
        let failure = loop {
            let reply = match wire::decode(self.dialect, &mut self.received, self.reply_limit) {
                Ok(Some(reply)) => reply,
                Ok(None) => break None,
                Err(error) => break Some(Failure::unavailable(error.to_string())),
            };
            let Some(front) = self.pending.front_mut() else {
                break Some(Failure::crossed("the server sent a reply nobody asked for"));
            };
            front.got.push(reply);
            if front.got.len() < front.replies {
                continue;
            }
            let mut done = self.pending.pop_front().expect("front exists");
            let mut replies = std::mem::take(&mut done.got);
            // The tag first: nothing of replies that may be another request's is used.
            let result = match wire::check_tag(self.dialect, done.tag, &mut replies) {
                TagCheck::InStep => Ok(replies),
                TagCheck::Unchecked => {
                    unchecked = true;
                    Ok(replies)
                }
                TagCheck::OutOfStep(why) => Err(Failure::crossed(why)),
            };
            let out_of_step = result.as_ref().err().cloned();
            if let Some(waiter) = done.waiter {
                answered.push((waiter, result));
            }
            if let Some(failure) = out_of_step {
                break Some(failure);
            }
        };
        Received {
            answered,
            failure,
            unchecked,
        }
    }

    /// Fails each waiter whose own deadline passed by `now`, alone: the requests behind it
    /// keep waiting until theirs (requests are sent in order, so their deadlines come in
    /// order). A request past its deadline keeps its place, its replies to be read and dropped.
    pub fn expire(&mut self, now: Instant) -> Expired<W> {
        let mut expired = Vec::new();
        let mut next = None;
        let mut overdue = false;
        for pending in self.pending.iter_mut() {
            if pending.deadline > now {
                next = Some(pending.deadline - now);
                break;
            }
            overdue = true;
            if let Some(waiter) = pending.waiter.take() {
                let failure = Failure::unavailable(format!("no reply within {:?}", self.timeout));
                expired.push((waiter, failure));
            }
        }
        Expired {
            expired,
            next,
            overdue,
        }
    }

    /// Empties the queue (the connection is done with): every waiter still waiting, in order,
    /// and no bytes left to read or write.
    pub fn take_waiters(&mut self) -> Waiters<W> {
        self.received.clear();
        self.outgoing.clear();
        Waiters(std::mem::take(&mut self.pending).into_iter())
    }

    /// How many requests wait for replies, those given up on included.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether the oldest request has waited longer than `after` by `now`.
    pub fn stalled(&self, now: Instant, after: Duration) -> bool {
        self.pending.front().is_some_and(|oldest| {
            let sent = oldest.deadline.checked_sub(self.timeout);
            sent.is_some_and(|sent| now.saturating_duration_since(sent) > after)
        })
    }

    /// The waiters still waiting, oldest first.
    pub fn waiters(&self) -> impl Iterator<Item = &W> {
        self.pending
            .iter()
            .filter_map(|pending| pending.waiter.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn resp() -> ReplyQueue<&'static str> {
        ReplyQueue::new(Dialect::Resp, SECOND, 1 << 20)
    }

    fn bulk(value: &str) -> Reply {
        Reply::Bulk(Some(value.as_bytes().to_vec()))
    }

    /// The echo of `tag` as Redis answers it (the tag as `wire::resp` writes it).
    fn echo(tag: u64) -> Vec<u8> {
        let mut request = Vec::new();
        crate::wire::resp::write_tag(tag, &mut request);
        let text = String::from_utf8(request).unwrap();
        let at = text.rfind('$').unwrap();
        text.as_bytes()[at..].to_vec()
    }

    fn answer(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn requests_are_tagged_in_order_and_written_together() {
        let mut queue = resp();
        let now = Instant::now();
        queue.send("a", b"*1\r\n$4\r\nPING\r\n", 1, now);
        queue.send("b", b"*1\r\n$4\r\nPING\r\n", 1, now);
        let written = queue.take_outgoing();
        let text = String::from_utf8(written).unwrap();
        assert_eq!(text.matches("PING").count(), 2);
        let echo0 = String::from_utf8(echo(0)).unwrap();
        let echo1 = String::from_utf8(echo(1)).unwrap();
        assert!(text.find(&echo0).unwrap() < text.find(&echo1).unwrap());
        assert!(queue.take_outgoing().is_empty(), "written once");
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn replies_reach_their_own_request_whatever_the_split() {
        let answer = answer(&[b"+PONG\r\n", &echo(0), b"$3\r\nbar\r\n", &echo(1)]);
        for split in 0..=answer.len() {
            let mut queue = resp();
            let now = Instant::now();
            queue.send("a", b"*1\r\n$4\r\nPING\r\n", 1, now);
            queue.send("b", b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n", 1, now);
            let mut answered = queue.receive(&answer[..split]).answered;
            let last = queue.receive(&answer[split..]);
            assert!(last.failure.is_none() && !last.unchecked);
            answered.extend(last.answered);
            assert_eq!(
                answered,
                vec![
                    ("a", Ok(vec![Reply::Status("PONG".to_owned())])),
                    ("b", Ok(vec![bulk("bar")])),
                ],
                "split at {split}"
            );
            assert!(queue.is_empty());
        }
    }

    #[test]
    fn a_reply_with_another_requests_tag_is_never_used() {
        let mut queue = resp();
        let now = Instant::now();
        queue.send("a", b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n", 1, now);
        queue.send("b", b"*2\r\n$3\r\nGET\r\n$3\r\nbar\r\n", 1, now);
        // A proxy doubled a reply: the first request's replies end with the wrong tag.
        let received = queue.receive(b"$3\r\nfoo\r\n$3\r\nbar\r\n");
        assert_eq!(received.answered.len(), 1);
        let (waiter, result) = &received.answered[0];
        assert_eq!(*waiter, "a");
        assert_eq!(
            result.as_ref().unwrap_err().kind,
            StoreErrorKind::Crossed,
            "nothing of it is handed over"
        );
        assert_eq!(received.failure.unwrap().kind, StoreErrorKind::Crossed);
        assert_eq!(queue.take_waiters().collect::<Vec<_>>(), vec!["b"]);
    }

    #[test]
    fn a_reply_nobody_asked_for_is_out_of_step() {
        let mut queue = resp();
        let received = queue.receive(b"+OK\r\n");
        assert!(received.answered.is_empty());
        assert_eq!(received.failure.unwrap().kind, StoreErrorKind::Crossed);
    }

    #[test]
    fn bytes_that_are_no_reply_make_the_connection_unavailable() {
        let mut queue = resp();
        queue.send("a", b"*1\r\n$4\r\nPING\r\n", 1, Instant::now());
        let received = queue.receive(b"?what\r\n");
        assert!(received.answered.is_empty());
        assert_eq!(received.failure.unwrap().kind, StoreErrorKind::Unavailable);
    }

    #[test]
    fn an_untagged_memcached_error_fails_its_request_and_is_reported_unchecked() {
        let mut queue = ReplyQueue::new(Dialect::Meta, SECOND, 1 << 20);
        queue.send("a", b"mg key v\r\n", 1, Instant::now());
        let received = queue.receive(b"SERVER_ERROR out of memory\r\n");
        assert!(received.unchecked && received.failure.is_none());
        assert_eq!(received.answered.len(), 1);
    }

    #[test]
    fn each_request_expires_alone_at_its_own_deadline_and_keeps_its_place() {
        let mut queue = resp();
        let start = Instant::now();
        queue.send("a", b"*1\r\n$4\r\nPING\r\n", 1, start);
        queue.send("b", b"*1\r\n$4\r\nPING\r\n", 1, start + SECOND / 2);
        let early = queue.expire(start + SECOND / 4);
        assert!(early.expired.is_empty() && !early.overdue);
        assert_eq!(early.next, Some(SECOND * 3 / 4));
        let late = queue.expire(start + SECOND);
        assert!(late.overdue);
        assert_eq!(late.expired.len(), 1);
        assert_eq!(late.expired[0].0, "a");
        assert_eq!(late.next, Some(SECOND / 2), "b waits for its own deadline");
        // a's reply comes late: read and dropped, not handed to b.
        let received = queue.receive(&answer(&[b"+PONG\r\n", &echo(0)]));
        assert!(received.answered.is_empty() && received.failure.is_none());
        let received = queue.receive(&answer(&[b"+PONG\r\n", &echo(1)]));
        assert_eq!(received.answered[0].0, "b");
    }

    #[test]
    fn a_request_is_stalled_once_its_wait_passes_the_bound() {
        let mut queue = resp();
        let start = Instant::now();
        assert!(!queue.stalled(start, SECOND / 100));
        queue.send("a", b"*1\r\n$4\r\nPING\r\n", 1, start);
        assert!(!queue.stalled(start, SECOND / 100));
        assert!(queue.stalled(start + SECOND / 50, SECOND / 100));
    }

    #[test]
    fn emptying_the_queue_hands_back_the_waiters_still_waiting_in_order() {
        let mut queue = resp();
        let start = Instant::now();
        for waiter in ["a", "b", "c"] {
            queue.send(waiter, b"*1\r\n$4\r\nPING\r\n", 1, start);
        }
        queue.expire(start + SECOND); // all three past: none waits any more
        queue.send("d", b"*1\r\n$4\r\nPING\r\n", 1, start + SECOND);
        assert_eq!(queue.waiters().copied().collect::<Vec<_>>(), vec!["d"]);
        assert_eq!(queue.take_waiters().collect::<Vec<_>>(), vec!["d"]);
        assert!(queue.is_empty() && queue.take_outgoing().is_empty());
    }
}

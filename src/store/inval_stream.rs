//! The invalidation stream in Redis: how one replica tells every other to drop cached identities.
//!
//! A Redis Stream rather than publish/subscribe, because a subscriber that was away misses pub/sub messages
//! without knowing it. Each message is an entry of `{inval}:stream` (under `state.key_prefix`) with a
//! sequence number from `{inval}:seq`, both written by one script (the two keys share the `{inval}` hash
//! tag, so this works on a Redis Cluster too), and the stream is capped (`XADD MAXLEN ~`). Each replica
//! reads it with `XREAD BLOCK` on a connection of its own, named `tollgate-inval` (so an operator, or a
//! test, can find it in `CLIENT LIST`), from the last entry it saw.
//!
//! A reader never silently skips a message: when a sequence number is missing (entries trimmed before it
//! read them) or its connection was lost and made again, it reports a [`StreamEvent::Gap`], and the
//! caller drops everything it caches. The payload is opaque here (JSON written by `crate::invalidate`).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;

use super::redis::{Redis, RedisError};

/// Add a message and give it the next sequence number; returns the number.
const PUBLISH: &str = "local n = redis.call('INCR', KEYS[2]) \
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'seq', n, 'msg', ARGV[2]) return n";

/// The name of each reader's connection in `CLIENT LIST`.
pub const CONNECTION_NAME: &str = "tollgate-inval";

fn keys(redis: &Redis) -> (String, String) {
    (redis.key("{inval}:stream"), redis.key("{inval}:seq"))
}

/// Publish `payload` to every replica's reader; keep at most about `max_len` entries. Returns its
/// sequence number.
pub async fn publish(redis: &Redis, payload: &str, max_len: u64) -> Result<u64, RedisError> {
    let (stream, seq) = keys(redis);
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(PUBLISH).arg(2).arg(stream).arg(seq).arg(max_len).arg(payload);
    redis.run("invalidation publish", &cmd).await
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A message, in order.
    Message { seq: u64, payload: String },
    /// Messages may have been missed (`reason`: `reconnected` or `trimmed`): drop everything cached.
    Gap { reason: &'static str },
}

/// One replica's reader.
pub struct StreamReader {
    redis: Arc<Redis>,
    stream: String,
    seq: String,
    command_timeout: Duration,
    block: Duration,
    conn: Option<MultiplexedConnection>,
    /// The last entry read (an id for XREAD) and its sequence number.
    last_id: String,
    last_seq: Option<u64>,
    /// Whether a connection was ever made: a later one means messages may have been missed in between.
    connected_before: bool,
}

fn command_error(what: &str, e: redis::RedisError) -> RedisError {
    RedisError::Command { what: what.to_string(), message: e.to_string() }
}

impl StreamReader {
    /// A reader that waits up to `block` per read. Nothing connects yet.
    pub fn new(redis: Arc<Redis>, block: Duration) -> StreamReader {
        let (stream, seq) = keys(&redis);
        let command_timeout = redis.command_timeout();
        StreamReader {
            redis,
            stream,
            seq,
            command_timeout,
            block,
            conn: None,
            last_id: "0-0".into(),
            last_seq: None,
            connected_before: false,
        }
    }

    async fn bounded(&mut self, what: &str, cmd: &redis::Cmd, extra: Duration) -> Result<Value, RedisError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(RedisError::Connect("not connected".into()));
        };
        let timeout = self.command_timeout + extra;
        match tokio::time::timeout(timeout, cmd.query_async::<Value>(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.conn = None;
                Err(command_error(what, e))
            }
            Err(_) => {
                self.conn = None;
                Err(RedisError::Timeout { what: what.to_string(), timeout })
            }
        }
    }

    /// Connect (to the master in use, in Sentinel mode), name the connection, and start from the newest
    /// entry. The connection has no response timeout of its own: every read is bounded in `bounded`.
    async fn connect(&mut self) -> Result<(), RedisError> {
        let conn = self.redis.dedicated().await?;
        self.conn = Some(conn);
        let mut name = redis::cmd("CLIENT");
        name.arg("SETNAME").arg(CONNECTION_NAME);
        self.bounded("CLIENT SETNAME", &name, Duration::ZERO).await?;
        let mut tip = redis::cmd("XREVRANGE");
        tip.arg(&self.stream).arg("+").arg("-").arg("COUNT").arg(1);
        let newest = self.bounded("XREVRANGE", &tip, Duration::ZERO).await?;
        match entries(&newest).into_iter().next() {
            Some((id, seq, _)) => {
                self.last_id = id;
                self.last_seq = seq;
            }
            None => {
                // Empty (nothing sent yet, or all trimmed): the next message is the one after the counter.
                self.last_id = "0-0".into();
                let mut get = redis::cmd("GET");
                get.arg(&self.seq);
                let seq = self.bounded("GET", &get, Duration::ZERO).await?;
                self.last_seq = Some(text(&seq).and_then(|s| s.parse().ok()).unwrap_or(0));
            }
        }
        Ok(())
    }

    /// Wait up to the block time for messages. An error means the connection is gone; the next call
    /// connects again and reports a [`StreamEvent::Gap`] first.
    pub async fn next(&mut self) -> Result<Vec<StreamEvent>, RedisError> {
        let mut events = Vec::new();
        if self.conn.is_none() {
            self.connect().await?;
            if self.connected_before {
                events.push(StreamEvent::Gap { reason: "reconnected" });
            }
            self.connected_before = true;
        }
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT").arg(100).arg("BLOCK").arg(self.block.as_millis() as u64);
        read.arg("STREAMS").arg(&self.stream).arg(&self.last_id);
        let reply = self.bounded("XREAD", &read, self.block).await?;
        for (id, seq, payload) in stream_entries(&reply) {
            if let (Some(last), Some(seq)) = (self.last_seq, seq) {
                if seq != last + 1 {
                    events.push(StreamEvent::Gap { reason: "trimmed" });
                }
            }
            self.last_id = id;
            if seq.is_some() {
                self.last_seq = seq;
            }
            if let (Some(seq), Some(payload)) = (seq, payload) {
                events.push(StreamEvent::Message { seq, payload });
            }
        }
        Ok(events)
    }
}

/// One entry: (id, seq, msg).
type Entry = (String, Option<u64>, Option<String>);

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn items(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a.iter().collect(),
        Value::Map(m) => m.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// The entries of an XRANGE/XREVRANGE reply: `[[id, [field, value, ...]], ...]`.
fn entries(v: &Value) -> Vec<Entry> {
    items(v)
        .into_iter()
        .filter_map(|e| {
            let parts = items(e);
            let id = text(parts.first()?)?;
            let fields = items(parts.get(1)?);
            let (mut seq, mut msg) = (None, None);
            for pair in fields.chunks(2) {
                match (pair.first().and_then(|k| text(k)).as_deref(), pair.get(1)) {
                    (Some("seq"), Some(v)) => seq = text(v).and_then(|s| s.parse().ok()),
                    (Some("msg"), Some(v)) => msg = text(v),
                    _ => {}
                }
            }
            Some((id, seq, msg))
        })
        .collect()
}

/// The entries of an XREAD reply for one stream: `[[key, entries]]` (RESP2) or `{key: entries}` (RESP3).
fn stream_entries(v: &Value) -> Vec<Entry> {
    let parts = items(v);
    match v {
        Value::Map(_) => parts.get(1).map(|e| entries(e)).unwrap_or_default(),
        _ => parts.first().and_then(|s| items(s).get(1).map(|e| entries(e))).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xread_replies_are_read_in_both_protocols() {
        let entry = |id: &str, seq: &str| {
            Value::Array(vec![bulk(id), Value::Array(vec![bulk("seq"), bulk(seq), bulk("msg"), bulk("{}")])])
        };
        let list = Value::Array(vec![entry("1-0", "7"), entry("2-0", "8")]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("k"), list.clone()])]);
        let resp3 = Value::Map(vec![(bulk("k"), list)]);
        for reply in [resp2, resp3] {
            let got = stream_entries(&reply);
            assert_eq!(got.len(), 2);
            assert_eq!(got[1], ("2-0".to_string(), Some(8), Some("{}".to_string())));
        }
        assert!(stream_entries(&Value::Nil).is_empty(), "a read that timed out has no entries");
    }
}

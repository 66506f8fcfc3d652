//! What messaging's own event log says happened, read after the day: the last seq (where
//! analytics must have counted up to), and the delivery and response times by the README's
//! definitions, so the sketches' percentiles can be held to their 1% of the true values.
use std::collections::HashMap;
use std::time::Duration;

use tonic::transport::Channel;
use wamesh_proto::messaging::v1 as pb;
use wamesh_proto::messaging::v1::events_client::EventsClient;

/// One of our messages, as the log tells it.
#[derive(Default)]
struct Sent {
    /// When it was first seen sent: its `send.accepted`, or a status if one came first.
    at_ms: Option<i64>,
    template: String,
    /// A `delivered` or `read` status was seen.
    seen: bool,
}

/// A user's side of the conversation: who wrote last, and since when.
struct Turn {
    inbound: bool,
    started_ms: i64,
}

#[derive(Debug, Default)]
pub struct Log {
    /// The last entry's seq.
    pub head: u64,
    /// Meta accepting a send (its first sign) to its `delivered` status (when that came before
    /// any `read`), with the message's template ("" for free-form).
    pub delivery_ms: Vec<(String, i64)>,
    /// A user's message to our first message after it.
    pub response_ms: Vec<i64>,
    /// Our messages first seen sent through a status webhook rather than their
    /// `send.accepted` (Meta's webhook overtook our own record of the send).
    pub status_first: usize,
}

impl Log {
    /// Reads the whole log (until it has been quiet for a second: the traffic is over).
    pub async fn read(messaging_url: &str) -> Self {
        let channel = Channel::from_shared(messaging_url.to_owned()).expect("a URL");
        let mut stream = EventsClient::new(channel.connect().await.expect("messaging"))
            .subscribe(pb::SubscribeRequest {
                after_seq: 0,
                kinds: Vec::new(),
            })
            .await
            .expect("Subscribe")
            .into_inner();
        let mut log = Self::default();
        let mut sent: HashMap<i64, Sent> = HashMap::new();
        let mut turns: HashMap<String, Turn> = HashMap::new();
        let mut delivered = Vec::new();
        while let Ok(item) = tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
            let Some(item) = item.expect("a log entry") else {
                break;
            };
            let Some(pb::subscribe_response::Item::Event(e)) = item.item else {
                continue;
            };
            log.head = e.seq;
            let at = e.committed_at_unix_ms;
            match e.kind.as_str() {
                "message.received" => log.turn(&mut turns, &e.contact_id, true, at),
                "send.accepted" => {
                    let s = sent.entry(e.outbound_id).or_default();
                    s.template = e.template_name;
                    if s.at_ms.is_none() {
                        s.at_ms = Some(at);
                        log.turn(&mut turns, &e.contact_id, false, at);
                    }
                }
                "status.updated" if e.outbound_id > 0 => {
                    let s = sent.entry(e.outbound_id).or_default();
                    // Any of these says Meta had the message: it was sent (a failed one too).
                    if !matches!(e.status.as_str(), "sent" | "delivered" | "read" | "failed") {
                        continue;
                    }
                    if s.at_ms.is_none() {
                        s.at_ms = Some(at);
                        log.status_first += 1;
                        log.turn(&mut turns, &e.contact_id, false, at);
                    }
                    if matches!(e.status.as_str(), "delivered" | "read") && !s.seen {
                        s.seen = true;
                        if e.status == "delivered" {
                            delivered.push((e.outbound_id, at - s.at_ms.unwrap_or(at)));
                        }
                    }
                }
                _ => {}
            }
        }
        log.delivery_ms = delivered
            .into_iter()
            .map(|(id, ms)| (sent[&id].template.clone(), ms))
            .collect();
        log
    }

    /// A message between `user` and us at `at`: a new turn when the other side wrote last;
    /// ours after the user's is a response.
    fn turn(&mut self, turns: &mut HashMap<String, Turn>, user: &str, inbound: bool, at: i64) {
        match turns.get_mut(user) {
            Some(turn) if turn.inbound == inbound => {}
            Some(turn) => {
                if turn.inbound {
                    self.response_ms.push((at - turn.started_ms).max(0));
                }
                *turn = Turn {
                    inbound,
                    started_ms: at,
                };
            }
            None => {
                turns.insert(
                    user.to_owned(),
                    Turn {
                        inbound,
                        started_ms: at,
                    },
                );
            }
        }
    }

    /// The delivery times of `template` (every message's with `None`).
    pub fn delivery_times(&self, template: Option<&str>) -> Vec<i64> {
        self.delivery_ms
            .iter()
            .filter(|(t, _)| template.is_none_or(|name| name == t))
            .map(|(_, ms)| *ms)
            .collect()
    }
}

/// The median as the sketches define it: the value of rank max(1, ceil(count / 2)).
pub fn median(values: &[i64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (sorted.len() as f64 * 0.5).ceil().max(1.0) as usize;
    sorted.get(rank - 1).copied().unwrap_or(0) as f64
}

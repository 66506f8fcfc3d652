//! What the rollups hold: their keys (a bucket of time and the dimensions) and their counters.
//!
//! Two tables of rollups, each kept per hour (the aggregation interval) and per day:
//! - message rollups, per business number, direction, message type, template, pricing category
//!   and error code: how many messages went in and out and what became of them;
//! - conversation rollups, per business number: turns, answers, sessions, and two sketches
//!   (response times, distinct users).
//!
//! A third, the delivery-time sketches per business number and template, sits beside them.
use std::collections::HashMap;
use std::ops::{AddAssign, Neg};

use crate::sketch::{Distinct, Quantiles};

/// The template name of the delivery sketches of all messages of a number (no template is
/// called that: Meta's names are lowercase letters, digits and underscores).
pub const ALL_TEMPLATES: &str = "*";

/// A day, in ms.
pub const DAY_MS: i64 = 86_400_000;

/// How coarse a rollup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grain {
    /// The aggregation interval (an hour by default).
    Hour,
    Day,
}

impl Grain {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            _ => None,
        }
    }
}

/// Where a moment falls: its hour bucket and its day bucket (both as their start, Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    /// The aggregation interval (ms); it divides a day.
    pub interval_ms: i64,
}

impl Buckets {
    pub fn start(&self, grain: Grain, at_ms: i64) -> i64 {
        let width = match grain {
            Grain::Hour => self.interval_ms,
            Grain::Day => DAY_MS,
        };
        at_ms.div_euclid(width) * width
    }

    /// The (grain, bucket start) pairs a moment counts in.
    pub fn of(&self, at_ms: i64) -> [(Grain, i64); 2] {
        [
            (Grain::Hour, self.start(Grain::Hour, at_ms)),
            (Grain::Day, self.start(Grain::Day, at_ms)),
        ]
    }
}

/// The dimensions of a message rollup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageDims {
    pub number: String,
    /// "inbound" or "outbound".
    pub direction: &'static str,
    pub message_type: String,
    pub template: String,
    pub pricing_category: String,
    /// Meta's code of a failed message (0 for every other).
    pub error_code: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageKey {
    pub grain: Grain,
    pub bucket_ms: i64,
    pub dims: MessageDims,
}

/// A message rollup's counters (or a change to them: they may be negative while a message
/// moves between rollups, e.g. when its pricing category becomes known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageCounts {
    pub messages_in: i64,
    /// Accepted by Meta (or seen sent by a status).
    pub messages_out: i64,
    pub delivered: i64,
    pub read: i64,
    /// Failed: refused for good before Meta took it, or a failed status after.
    pub failed: i64,
    /// Failed before Meta took it (so not in `messages_out`): what was attempted is
    /// `messages_out + rejected`.
    pub rejected: i64,
    /// Of ours: messages a user replied to (a reply whose context is the message) ...
    pub replied: i64,
    /// ... with a button or list reply.
    pub clicked: i64,
}

impl MessageCounts {
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

impl AddAssign for MessageCounts {
    fn add_assign(&mut self, o: Self) {
        self.messages_in += o.messages_in;
        self.messages_out += o.messages_out;
        self.delivered += o.delivered;
        self.read += o.read;
        self.failed += o.failed;
        self.rejected += o.rejected;
        self.replied += o.replied;
        self.clicked += o.clicked;
    }
}

impl Neg for MessageCounts {
    type Output = Self;
    fn neg(self) -> Self {
        Self {
            messages_in: -self.messages_in,
            messages_out: -self.messages_out,
            delivered: -self.delivered,
            read: -self.read,
            failed: -self.failed,
            rejected: -self.rejected,
            replied: -self.replied,
            clicked: -self.clicked,
        }
    }
}

/// The key of a conversation rollup (and of a delivery-time sketch, with a template).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NumberKey {
    pub grain: Grain,
    pub bucket_ms: i64,
    pub number: String,
}

/// A conversation rollup's counters. A turn is one side's run of messages: a user's turn
/// begins with their first message after ours (or their first ever), ours likewise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConversationCounts {
    pub user_turns: i64,
    /// Users' turns we answered (filed under the hour the user's turn began).
    pub user_turns_answered: i64,
    pub business_turns: i64,
    /// Our turns users answered.
    pub business_turns_answered: i64,
    /// Sessions begun (a session ends after 30 minutes without a message either way).
    pub sessions: i64,
    /// Their length so far, filed under the hour each began.
    pub session_ms: i64,
}

impl AddAssign for ConversationCounts {
    fn add_assign(&mut self, o: Self) {
        self.user_turns += o.user_turns;
        self.user_turns_answered += o.user_turns_answered;
        self.business_turns += o.business_turns;
        self.business_turns_answered += o.business_turns_answered;
        self.sessions += o.sessions;
        self.session_ms += o.session_ms;
    }
}

/// What a conversation rollup gains: counters, response times and users to merge in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationDelta {
    pub counts: ConversationCounts,
    pub response_ms: Quantiles,
    pub users: Distinct,
}

/// Every rollup change of a batch of events, summed per key.
#[derive(Debug, Default)]
pub struct RollupChanges {
    pub messages: HashMap<MessageKey, MessageCounts>,
    pub conversations: HashMap<NumberKey, ConversationDelta>,
    /// Delivery times (ms) per (bucket, number) and template.
    pub delivery: HashMap<(NumberKey, String), Quantiles>,
    /// The response times of this batch as (time of our answer, ms): for the live window of
    /// alerts, not stored.
    pub responses: Vec<(i64, i64)>,
}

impl RollupChanges {
    /// Adds `counts` to the message rollups of `dims` at `at_ms`, hourly and daily.
    pub fn add_messages(
        &mut self,
        buckets: Buckets,
        at_ms: i64,
        dims: &MessageDims,
        counts: MessageCounts,
    ) {
        if counts.is_zero() {
            return;
        }
        for (grain, bucket_ms) in buckets.of(at_ms) {
            let key = MessageKey {
                grain,
                bucket_ms,
                dims: dims.clone(),
            };
            *self.messages.entry(key).or_default() += counts;
        }
    }

    /// The conversation rollups of `number` at `at_ms`, hourly and daily, for `change` to edit.
    pub fn conversation(
        &mut self,
        buckets: Buckets,
        at_ms: i64,
        number: &str,
        mut change: impl FnMut(&mut ConversationDelta),
    ) {
        for (grain, bucket_ms) in buckets.of(at_ms) {
            let key = NumberKey {
                grain,
                bucket_ms,
                number: number.to_owned(),
            };
            change(self.conversations.entry(key).or_default());
        }
    }

    /// Adds a delivery time to the sketches of `number` and `template` at `at_ms`, and to the
    /// number's sketch of every template ([`ALL_TEMPLATES`]), which overviews read: one sketch
    /// per bucket instead of one per template.
    pub fn add_delivery(
        &mut self,
        buckets: Buckets,
        at_ms: i64,
        number: &str,
        template: &str,
        ms: i64,
    ) {
        for (grain, bucket_ms) in buckets.of(at_ms) {
            for template in [template, ALL_TEMPLATES] {
                let key = NumberKey {
                    grain,
                    bucket_ms,
                    number: number.to_owned(),
                };
                self.delivery
                    .entry((key, template.to_owned()))
                    .or_default()
                    .add(ms.max(0) as f64);
            }
        }
    }

    /// Drops message changes that cancelled out.
    pub fn prune(&mut self) {
        self.messages.retain(|_, counts| !counts.is_zero());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moment_falls_in_its_hour_and_its_day() {
        let buckets = Buckets {
            interval_ms: 3_600_000,
        };
        // 2026-12-03 14:25:27.5 UTC
        let at = 1_796_307_927_500;
        let [(h, hour), (d, day)] = buckets.of(at);
        assert_eq!((h, d), (Grain::Hour, Grain::Day));
        assert_eq!(hour % 3_600_000, 0);
        assert!(hour <= at && at < hour + 3_600_000);
        assert_eq!(day % DAY_MS, 0);
        assert!(day <= at && at < day + DAY_MS);
        assert_eq!(
            Buckets {
                interval_ms: 900_000
            }
            .start(Grain::Hour, at)
                % 900_000,
            0
        );
    }

    #[test]
    fn changes_that_cancel_out_are_pruned() {
        let buckets = Buckets {
            interval_ms: 3_600_000,
        };
        let dims = MessageDims {
            number: "1".into(),
            direction: "outbound",
            message_type: "text".into(),
            template: String::new(),
            pricing_category: String::new(),
            error_code: 0,
        };
        let sent = MessageCounts {
            messages_out: 1,
            ..MessageCounts::default()
        };
        let mut changes = RollupChanges::default();
        changes.add_messages(buckets, 0, &dims, sent);
        assert_eq!(changes.messages.len(), 2, "an hour and a day");
        changes.add_messages(buckets, 0, &dims, -sent);
        changes.prune();
        assert!(changes.messages.is_empty());
    }
}

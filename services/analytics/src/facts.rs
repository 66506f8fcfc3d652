//! What analytics remembers between events: one fact per message (its dimensions and the times
//! of its states) and one state per user of each business number (turns and sessions). Rollup
//! changes are derived from how these change: a message counts in the rollups through
//! [`Fact::contribution`], so when an event changes a fact, the rollups change by the
//! difference of its contribution before and after, and nothing is counted twice.
use crate::rollup::{MessageCounts, MessageDims};

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inbound" => Some(Self::Inbound),
            "outbound" => Some(Self::Outbound),
            _ => None,
        }
    }
}

/// One message, as analytics knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// `o:<outbound id>` for our sends, `w:<wamid>` for every other message.
    pub key: String,
    pub wamid: Option<String>,
    pub number: String,
    pub user: u64,
    pub direction: Direction,
    pub message_type: String,
    pub template: String,
    pub pricing_category: String,
    /// A user's message: when it came. Ours: when Meta took it (or its first status said so).
    pub at_ms: Option<i64>,
    pub delivered_ms: Option<i64>,
    pub read_ms: Option<i64>,
    pub failed_ms: Option<i64>,
    pub error_code: i64,
    pub replied: bool,
    pub clicked: bool,
}

impl Fact {
    /// A message we know nothing of yet.
    pub fn new(key: String, number: &str, user: u64, direction: Direction) -> Self {
        Self {
            key,
            wamid: None,
            number: number.to_owned(),
            user,
            direction,
            message_type: String::new(),
            template: String::new(),
            pricing_category: String::new(),
            at_ms: None,
            delivered_ms: None,
            read_ms: None,
            failed_ms: None,
            error_code: 0,
            replied: false,
            clicked: false,
        }
    }

    /// Where and how this message counts in the message rollups: its time, its dimensions and
    /// its counters; `None` while it counts nowhere (queued, not yet sent nor failed).
    pub fn contribution(&self) -> Option<(i64, MessageDims, MessageCounts)> {
        let at_ms = self.at_ms.or(self.failed_ms)?;
        let failed = self.failed_ms.is_some();
        let dims = MessageDims {
            number: self.number.clone(),
            direction: self.direction.as_str(),
            message_type: self.message_type.clone(),
            template: self.template.clone(),
            pricing_category: self.pricing_category.clone(),
            error_code: if failed { self.error_code } else { 0 },
        };
        let flag = |b: bool| i64::from(b);
        let counts = match self.direction {
            Direction::Inbound => MessageCounts {
                messages_in: 1,
                ..MessageCounts::default()
            },
            Direction::Outbound => MessageCounts {
                messages_out: flag(self.at_ms.is_some()),
                delivered: flag(self.delivered_ms.is_some()),
                read: flag(self.read_ms.is_some()),
                failed: flag(failed),
                rejected: flag(failed && self.at_ms.is_none()),
                replied: flag(self.replied),
                clicked: flag(self.clicked),
                ..MessageCounts::default()
            },
        };
        Some((at_ms, dims, counts))
    }
}

/// A user of a business number: whose turn it is and the session in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserState {
    pub number: String,
    pub user: u64,
    /// Who wrote last (`None`: nobody yet).
    pub last_direction: Option<Direction>,
    /// When the current turn began (the user's: when they began waiting for us).
    pub turn_started_ms: i64,
    pub session_started_ms: i64,
    pub session_last_ms: i64,
}

impl UserState {
    pub fn new(number: &str, user: u64) -> Self {
        Self {
            number: number.to_owned(),
            user,
            last_direction: None,
            turn_started_ms: 0,
            session_started_ms: 0,
            session_last_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_message_counts_nowhere_and_a_sent_one_counts_once() {
        let mut fact = Fact::new("o:1".into(), "n", 7, Direction::Outbound);
        assert_eq!(fact.contribution(), None);
        fact.at_ms = Some(1_000);
        let (at, dims, counts) = fact.contribution().unwrap();
        assert_eq!((at, dims.error_code), (1_000, 0));
        assert_eq!(counts.messages_out, 1);
        assert_eq!(counts.delivered + counts.read + counts.failed, 0);
    }

    #[test]
    fn a_failure_is_filed_under_its_code() {
        let mut fact = Fact::new("o:1".into(), "n", 7, Direction::Outbound);
        fact.failed_ms = Some(5);
        fact.error_code = 131_026;
        let (at, dims, counts) = fact.contribution().unwrap();
        assert_eq!(
            (at, dims.error_code, counts.failed, counts.messages_out),
            (5, 131_026, 1, 0)
        );
    }
}

//! Delivery statuses of an outbound message and their order.
//!
//! `sent < delivered < read < played`; `failed` is terminal. A status may arrive late, twice,
//! or before the one it follows (a `read` without a `delivered`): the current state is the
//! highest ranked status ever received, so it never moves backwards. Statuses without a rank
//! (Meta's older `deleted` and `warning`, and any future value) go into the timeline only.

/// A delivery status with a place in the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    /// A voice message was played (after it was read).
    Played,
    /// Terminal: nothing moves a failed message to another state.
    Failed,
}

impl DeliveryStatus {
    /// Parses Meta's status string; `None` for statuses that do not move the state machine.
    pub fn parse(status: &str) -> Option<Self> {
        match status.to_ascii_lowercase().as_str() {
            "sent" => Some(Self::Sent),
            "delivered" => Some(Self::Delivered),
            "read" => Some(Self::Read),
            "played" => Some(Self::Played),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Played => "played",
            Self::Failed => "failed",
        }
    }

    /// The rank stored beside the status: a new status applies only when its rank is higher.
    pub fn rank(self) -> i32 {
        match self {
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Read => 3,
            Self::Played => 4,
            Self::Failed => 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DeliveryStatus::*;
    use super::*;

    #[test]
    fn the_order_never_lets_a_late_status_win() {
        assert!(Sent.rank() < Delivered.rank());
        assert!(Delivered.rank() < Read.rank());
        assert!(Read.rank() < Played.rank());
        assert!(Played.rank() < Failed.rank());
    }

    #[test]
    fn parses_meta_strings_and_leaves_others_out() {
        assert_eq!(DeliveryStatus::parse("read"), Some(Read));
        assert_eq!(DeliveryStatus::parse("FAILED"), Some(Failed));
        assert_eq!(DeliveryStatus::parse("deleted"), None);
        assert_eq!(DeliveryStatus::parse("warning"), None);
        for s in [Sent, Delivered, Read, Played, Failed] {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
    }
}

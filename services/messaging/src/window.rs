//! The 24-hour customer service window: it opens (or resets) whenever the user messages the
//! business number; inside it any message may be sent, outside it only templates.

/// How long the window stays open after the user's last message.
pub const SERVICE_WINDOW_S: i64 = 24 * 60 * 60;

/// The window of one (business number, user) whose newest message is `last_inbound_s`
/// (Meta's timestamp, Unix s; 0 when the user never wrote).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceWindow {
    pub last_inbound_s: i64,
}

impl ServiceWindow {
    /// When it closes (or closed), Unix s; 0 when it never opened.
    pub fn expires_at_s(self) -> i64 {
        if self.last_inbound_s > 0 {
            self.last_inbound_s + SERVICE_WINDOW_S
        } else {
            0
        }
    }

    pub fn is_open_at(self, now_s: i64) -> bool {
        now_s < self.expires_at_s()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_open_for_24_hours_after_the_last_inbound_message() {
        assert!(
            !ServiceWindow { last_inbound_s: 0 }.is_open_at(1_000),
            "never opened"
        );
        let w = ServiceWindow {
            last_inbound_s: 1_000,
        };
        assert!(w.is_open_at(1_000 + SERVICE_WINDOW_S - 1));
        assert_eq!(w.expires_at_s(), 1_000 + SERVICE_WINDOW_S);
        assert!(!w.is_open_at(1_000 + SERVICE_WINDOW_S));
    }
}

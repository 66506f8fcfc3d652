//! The 24-hour customer service window, per (business number, user): opened or reset by every
//! message the user sends the business (the simulated users and `/_sim/inbound`, the only
//! users the simulator has). Inside it any message is delivered; outside it only templates.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Windows kept at most before the closed ones are forgotten.
const MAX_WINDOWS: usize = 1_000_000;

/// When each user last wrote to each number.
#[derive(Debug, Default)]
pub struct Windows {
    last_message: Mutex<HashMap<(String, String), Instant>>,
}

impl Windows {
    /// `wa_id` just wrote to `phone_number_id`.
    pub fn open(&self, phone_number_id: &str, wa_id: &str, window: Duration) {
        let now = Instant::now();
        let mut last = self.last_message.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() >= MAX_WINDOWS {
            last.retain(|_, at| now.duration_since(*at) < window);
        }
        last.insert((phone_number_id.to_owned(), wa_id.to_owned()), now);
    }

    /// Whether `wa_id` wrote to `phone_number_id` within `window`.
    pub fn is_open(&self, phone_number_id: &str, wa_id: &str, window: Duration) -> bool {
        self.last_message
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(phone_number_id.to_owned(), wa_id.to_owned()))
            .is_some_and(|at| at.elapsed() < window)
    }
}

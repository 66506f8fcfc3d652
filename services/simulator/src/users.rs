//! Simulated users: a population of users of one business number who message it at a total
//! rate, and answer what the business sends them. When the business sends one of them a
//! message, the user taps one of its buttons with `tap_probability` (reply buttons, list rows,
//! template quick replies) or else replies with a text with `reply_probability`, with the
//! message as context, once the message is read (or delivered, when it is not read). Every
//! user message opens the user's window.
//!
//! `POST /_sim/users` starts a population (replacing the number's previous one),
//! `GET /_sim/users` counts, `DELETE /_sim/users` stops them all. The users' wa_ids are
//! `1999` followed by their 7-digit index (`19990000000`, `19990000001`...).
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wamesh_runtime::Shutdown;

use crate::SimState;
use crate::error::GraphError;
use crate::inbound::{Content, UserMessage, new_wamid};
use crate::outbox::Update;
use crate::templates::Template;

/// Users in one population at most (their wa_ids have 7 digits after the prefix).
pub const MAX_USERS: u64 = 10_000_000;

const PREFIX: &str = "1999";

/// How often a population's task wakes to send what is due.
const TICK: Duration = Duration::from_millis(10);

/// A `POST /_sim/users` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopulationSpec {
    pub phone_number_id: String,
    pub users: u64,
    /// Messages the whole population sends the business per second, unprompted.
    pub messages_per_second: f64,
    pub reply_probability: f64,
    pub tap_probability: f64,
    /// Stops by itself after this long; runs until stopped when absent.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

impl PopulationSpec {
    fn validate(&self) -> Result<(), String> {
        if self.phone_number_id.trim().is_empty() {
            return Err("phone_number_id is required".to_owned());
        }
        if !(1..=MAX_USERS).contains(&self.users) {
            return Err(format!(
                "users must be 1 to {MAX_USERS}, not {}",
                self.users
            ));
        }
        if !(self.messages_per_second.is_finite()
            && (0.0..=100_000.0).contains(&self.messages_per_second))
        {
            return Err(format!(
                "messages_per_second must be 0 to 100000, not {}",
                self.messages_per_second
            ));
        }
        for (name, p) in [
            ("reply_probability", self.reply_probability),
            ("tap_probability", self.tap_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be between 0 and 1, not {p}"));
            }
        }
        Ok(())
    }
}

/// A running (or finished) population and its counts.
#[derive(Debug)]
pub struct Population {
    spec: PopulationSpec,
    stop: Shutdown,
    running: AtomicBool,
    messages_sent: AtomicU64,
    replies: AtomicU64,
    taps: AtomicU64,
}

impl Population {
    fn json(&self) -> Value {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "phone_number_id": self.spec.phone_number_id,
            "users": self.spec.users,
            "messages_per_second": self.spec.messages_per_second,
            "reply_probability": self.spec.reply_probability,
            "tap_probability": self.spec.tap_probability,
            "duration_ms": self.spec.duration_ms,
            "first_wa_id": wa_id(0),
            "running": self.running.load(Ordering::Relaxed),
            "messages_sent": count(&self.messages_sent),
            "replies_sent": count(&self.replies),
            "taps_sent": count(&self.taps),
        })
    }

    fn has(&self, wa_id: &str) -> bool {
        wa_id.len() == PREFIX.len() + 7
            && wa_id.starts_with(PREFIX)
            && wa_id[PREFIX.len()..]
                .parse::<u64>()
                .is_ok_and(|i| i < self.spec.users)
    }
}

/// The user with index `i`.
pub fn wa_id(i: u64) -> String {
    format!("{PREFIX}{i:07}")
}

/// Every population, one per business number.
#[derive(Debug, Default)]
pub struct Users {
    by_number: Mutex<HashMap<String, Arc<Population>>>,
}

impl Users {
    fn get(&self, phone_number_id: &str) -> Option<Arc<Population>> {
        self.by_number
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(phone_number_id)
            .cloned()
    }
}

/// What the business sent, as a user reacting to it needs it.
#[derive(Debug)]
pub struct Received<'a> {
    pub phone_number_id: &'a str,
    pub wa_id: &'a str,
    pub wamid: &'a str,
    /// The send's body.
    pub body: &'a Value,
    pub template: Option<&'a Template>,
}

/// The business sent a message that reaches its user at `seen_at`: a simulated user may tap or
/// reply then.
pub fn business_message(state: &SimState, received: Received<'_>, seen_at: Instant) {
    let Some(population) = state.users.get(received.phone_number_id) else {
        return;
    };
    if !population.running.load(Ordering::Relaxed) || !population.has(received.wa_id) {
        return;
    }
    let choices = taps(&received);
    let content = if !choices.is_empty() && rand::random::<f64>() < population.spec.tap_probability
    {
        population.taps.fetch_add(1, Ordering::Relaxed);
        choices[rand::random_range(0..choices.len())].clone()
    } else if rand::random::<f64>() < population.spec.reply_probability {
        population.replies.fetch_add(1, Ordering::Relaxed);
        Content::Text(format!("Thanks, got your message {}", received.wamid))
    } else {
        return;
    };
    let message = UserMessage {
        phone_number_id: received.phone_number_id.to_owned(),
        from: received.wa_id.to_owned(),
        name: name(received.wa_id),
        wamid: new_wamid(),
        content,
        context: Some(received.wamid.to_owned()),
    };
    state.schedule(seen_at, Update::Message(Box::new(message)));
}

/// What a user could tap in a message: its reply buttons, its list rows, or its template's
/// quick replies (with the payload the send gave, else the button's text).
fn taps(received: &Received<'_>) -> Vec<Content> {
    let body = received.body;
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or("").to_owned();
    if let Some(template) = received.template {
        let sent = body["template"]["components"].as_array();
        return template
            .spec
            .buttons
            .iter()
            .enumerate()
            .filter(|(_, b)| b.sub_type == "quick_reply")
            .map(|(index, button)| {
                let payload = sent
                    .into_iter()
                    .flatten()
                    .find(|c| {
                        c["sub_type"].as_str() == Some("quick_reply")
                            && (c["index"].as_u64() == Some(index as u64)
                                || c["index"].as_str() == Some(&index.to_string()))
                    })
                    .and_then(|c| c["parameters"][0]["payload"].as_str())
                    .unwrap_or(&button.text);
                Content::Button {
                    payload: payload.to_owned(),
                    text: button.text.clone(),
                }
            })
            .collect();
    }
    let interactive = &body["interactive"];
    let action = &interactive["action"];
    match interactive["type"].as_str() {
        Some("button") => action["buttons"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| Content::ButtonReply {
                id: text(&b["reply"], "id"),
                title: text(&b["reply"], "title"),
            })
            .collect(),
        Some("list") => action["sections"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["rows"].as_array().into_iter().flatten())
            .map(|row| Content::ListReply {
                id: text(row, "id"),
                title: text(row, "title"),
                description: row["description"].as_str().map(str::to_owned),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn name(wa_id: &str) -> String {
    format!("Sim User {}", &wa_id[PREFIX.len().min(wa_id.len())..])
}

/// Sends the population's unprompted messages at its rate until it is stopped, its duration
/// ends or the simulator stops.
async fn run(state: SimState, population: Arc<Population>) {
    let spec = &population.spec;
    let start = Instant::now();
    let duration = spec.duration_ms.map(Duration::from_millis);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            () = population.stop.cancelled() => break,
            () = tokio::time::sleep(TICK) => {}
        }
        let elapsed = start.elapsed();
        let elapsed = duration.map_or(elapsed, |d| elapsed.min(d));
        let due = (elapsed.as_secs_f64() * spec.messages_per_second) as u64;
        while sent < due {
            sent += 1;
            let from = wa_id(rand::random_range(0..spec.users));
            let message = UserMessage {
                phone_number_id: spec.phone_number_id.clone(),
                name: name(&from),
                content: Content::Text(format!("Hello from {} (message {sent})", name(&from))),
                from,
                wamid: new_wamid(),
                context: None,
            };
            population.messages_sent.fetch_add(1, Ordering::Relaxed);
            state.schedule(Instant::now(), Update::Message(Box::new(message)));
        }
        if duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
    }
    population.running.store(false, Ordering::Relaxed);
}

/// `POST /_sim/users`: starts a population (see [`PopulationSpec`]); answers its counts.
pub async fn start(State(state): State<SimState>, body: Bytes) -> Result<Json<Value>, GraphError> {
    let spec: PopulationSpec = serde_json::from_slice(&body)
        .map_err(|e| GraphError::invalid_parameter(format!("the population is not valid: {e}")))?;
    spec.validate().map_err(GraphError::invalid_parameter)?;
    let population = Arc::new(Population {
        stop: state.stop.child_token(),
        spec,
        running: AtomicBool::new(true),
        messages_sent: AtomicU64::new(0),
        replies: AtomicU64::new(0),
        taps: AtomicU64::new(0),
    });
    let previous = state
        .users
        .by_number
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(population.spec.phone_number_id.clone(), population.clone());
    if let Some(previous) = previous {
        previous.stop.cancel();
    }
    tracing::info!(
        users = population.spec.users,
        messages_per_second = population.spec.messages_per_second,
        "simulated users started"
    );
    tokio::spawn(run(state, population.clone()));
    Ok(Json(population.json()))
}

/// `GET /_sim/users`: `{"populations": [{.., running, messages_sent, replies_sent, taps_sent}]}`.
pub async fn list(State(state): State<SimState>) -> Json<Value> {
    let by_number = state
        .users
        .by_number
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut populations: Vec<Value> = by_number.values().map(|p| p.json()).collect();
    populations.sort_by(|a, b| {
        a["phone_number_id"]
            .as_str()
            .cmp(&b["phone_number_id"].as_str())
    });
    Json(json!({ "populations": populations }))
}

/// `DELETE /_sim/users`: stops every population (they stay listed, not running); answers
/// `{"stopped": n}`.
pub async fn stop(State(state): State<SimState>) -> Json<Value> {
    let by_number = state
        .users
        .by_number
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut stopped = 0;
    for population in by_number.values() {
        if population.running.swap(false, Ordering::Relaxed) {
            stopped += 1;
        }
        population.stop.cancel();
    }
    Json(json!({ "stopped": stopped }))
}

//! Counting a batch of events: the facts and user states they touch change, and the rollups
//! change with them ([`apply`]). Pure: the consumer loads what a batch needs ([`needs`]), applies
//! it, and commits the changed facts, users, rollups and the new cursor in one transaction.
use std::collections::{HashMap, HashSet};

use crate::event::{Event, EventKind};
use crate::facts::{Direction, Fact, UserState};
use crate::rollup::{Buckets, RollupChanges};

/// A session ends after this long without a message either way.
pub const SESSION_GAP_MS: i64 = 30 * 60 * 1000;

/// What a batch needs loaded before it is applied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub fact_keys: Vec<String>,
    pub wamids: Vec<String>,
    pub users: Vec<(String, u64)>,
}

/// The facts and users a batch may touch, as loaded (and changed by [`apply`]).
#[derive(Debug, Default)]
pub struct State {
    facts: HashMap<String, Fact>,
    /// wamid -> fact key, for statuses without our callback data and for replies.
    by_wamid: HashMap<String, String>,
    users: HashMap<(String, u64), UserState>,
    touched_facts: HashSet<String>,
    touched_users: HashSet<(String, u64)>,
}

impl State {
    /// The state of a batch from what the store loaded.
    pub fn new(facts: Vec<Fact>, users: Vec<UserState>) -> Self {
        let mut state = Self::default();
        for fact in facts {
            if let Some(wamid) = &fact.wamid {
                state.by_wamid.insert(wamid.clone(), fact.key.clone());
            }
            state.facts.insert(fact.key.clone(), fact);
        }
        for user in users {
            state.users.insert((user.number.clone(), user.user), user);
        }
        state
    }

    /// The facts and users the batch changed, to be written back.
    pub fn into_changed(mut self) -> (Vec<Fact>, Vec<UserState>) {
        let facts = self
            .touched_facts
            .iter()
            .filter_map(|k| self.facts.remove(k))
            .collect();
        let users = self
            .touched_users
            .iter()
            .filter_map(|k| self.users.remove(k))
            .collect();
        (facts, users)
    }

    /// The key of the fact an event speaks of: our send's by its outbound id, else the fact
    /// already known by its wamid, else a new one by its wamid.
    fn key_of(&self, e: &Event) -> String {
        if e.outbound_id > 0 {
            return format!("o:{}", e.outbound_id);
        }
        self.by_wamid
            .get(&e.wamid)
            .cloned()
            .unwrap_or_else(|| format!("w:{}", e.wamid))
    }
}

/// The facts, wamids and users `events` may touch.
pub fn needs(events: &[Event]) -> Needs {
    let mut needs = Needs::default();
    for e in events {
        if e.outbound_id > 0 {
            needs.fact_keys.push(format!("o:{}", e.outbound_id));
        }
        if !e.wamid.is_empty() {
            needs.fact_keys.push(format!("w:{}", e.wamid));
            needs.wamids.push(e.wamid.clone());
        }
        if !e.context_wamid.is_empty() {
            needs.wamids.push(e.context_wamid.clone());
        }
        if e.user != 0 {
            needs.users.push((e.number.clone(), e.user));
        }
    }
    for list in [&mut needs.fact_keys, &mut needs.wamids] {
        list.sort_unstable();
        list.dedup();
    }
    needs.users.sort_unstable();
    needs.users.dedup();
    needs
}

/// Applies `events` (in log order) to `state`, returning the rollup changes they make.
pub fn apply(buckets: Buckets, events: &[Event], state: &mut State) -> RollupChanges {
    let mut changes = RollupChanges::default();
    for e in events {
        match e.kind {
            EventKind::MessageReceived => {
                message(buckets, e, Direction::Inbound, state, &mut changes);
                if !e.context_wamid.is_empty() {
                    reply(e, state, buckets, &mut changes);
                }
            }
            EventKind::MessageEchoed => {
                message(buckets, e, Direction::Outbound, state, &mut changes);
            }
            EventKind::SendAccepted => {
                let first = edit_fact(state, e, Direction::Outbound, buckets, &mut changes, |f| {
                    let first = f.at_ms.is_none();
                    f.at_ms = f.at_ms.or(Some(e.at_ms));
                    if f.wamid.is_none() && !e.wamid.is_empty() {
                        f.wamid = Some(e.wamid.clone());
                    }
                    describe(f, e);
                    first
                });
                if first {
                    interaction(buckets, e, Direction::Outbound, state, &mut changes);
                }
            }
            EventKind::SendFailed | EventKind::SendDead => {
                edit_fact(state, e, Direction::Outbound, buckets, &mut changes, |f| {
                    describe(f, e);
                    if f.failed_ms.is_none() {
                        f.failed_ms = Some(e.at_ms);
                        f.error_code = e.error_code;
                    }
                });
            }
            EventKind::StatusUpdated if !e.wamid.is_empty() => {
                status(buckets, e, state, &mut changes);
            }
            EventKind::StatusUpdated
            | EventKind::SendQueued
            | EventKind::SendRetrying
            | EventKind::SendInDoubt
            | EventKind::WebhookEvent => {}
        }
    }
    changes.prune();
    changes
}

/// A user's message, or one the business sent from another client.
fn message(
    buckets: Buckets,
    e: &Event,
    direction: Direction,
    state: &mut State,
    changes: &mut RollupChanges,
) {
    let first = edit_fact(state, e, direction, buckets, changes, |f| {
        let first = f.at_ms.is_none();
        f.at_ms = f.at_ms.or(Some(e.at_ms));
        if f.wamid.is_none() {
            f.wamid = Some(e.wamid.clone());
        }
        describe(f, e);
        first
    });
    if first {
        interaction(buckets, e, direction, state, changes);
    }
}

/// A user's reply to one of our messages (its context): that message was replied to, and a
/// button or list reply is a click.
fn reply(e: &Event, state: &mut State, buckets: Buckets, changes: &mut RollupChanges) {
    let Some(key) = state.by_wamid.get(&e.context_wamid).cloned() else {
        return;
    };
    let Some(fact) = state.facts.get_mut(&key) else {
        return;
    };
    if fact.direction != Direction::Outbound {
        return;
    }
    let before = fact.contribution();
    fact.replied = true;
    fact.clicked |= !e.reply_id.is_empty() || e.message_type == "button";
    let after = fact.contribution();
    record(buckets, before, after, changes);
    state.touched_facts.insert(key);
}

/// A status of a message of the business: it was sent, delivered, read or failed. When it is
/// the first word that the message was sent (Meta's webhook can overtake its own answer to the
/// send, and so our `send.accepted`), the message is an interaction from then on.
fn status(buckets: Buckets, e: &Event, state: &mut State, changes: &mut RollupChanges) {
    let mut delivery = None;
    let first = edit_fact(state, e, Direction::Outbound, buckets, changes, |f| {
        let unsent = f.at_ms.is_none();
        if f.wamid.is_none() {
            f.wamid = Some(e.wamid.clone());
        }
        if f.pricing_category.is_empty() {
            f.pricing_category.clone_from(&e.pricing_category);
        }
        match e.status.as_str() {
            "sent" => f.at_ms = f.at_ms.or(Some(e.at_ms)),
            "delivered" | "read" => {
                f.at_ms = f.at_ms.or(Some(e.at_ms));
                if f.delivered_ms.is_none() {
                    f.delivered_ms = Some(e.at_ms);
                    if e.status == "delivered" {
                        delivery = f
                            .at_ms
                            .map(|sent| (sent, e.at_ms - sent, f.template.clone()));
                    }
                }
                if e.status == "read" && f.read_ms.is_none() {
                    f.read_ms = Some(e.at_ms);
                }
            }
            "failed" if f.failed_ms.is_none() => {
                // Meta had the message (it reports on it), so it was sent, then failed: not
                // refused before Meta took it.
                f.at_ms = f.at_ms.or(Some(e.at_ms));
                f.failed_ms = Some(e.at_ms);
                f.error_code = e.error_code;
            }
            _ => {}
        }
        unsent && f.at_ms.is_some()
    });
    if first {
        interaction(buckets, e, Direction::Outbound, state, changes);
    }
    if let Some((sent_ms, ms, template)) = delivery {
        changes.add_delivery(buckets, sent_ms, &e.number, &template, ms);
    }
}

/// Takes the type and template an event tells of, where the fact has none yet.
fn describe(f: &mut Fact, e: &Event) {
    if f.message_type.is_empty() {
        f.message_type.clone_from(&e.message_type);
    }
    if f.template.is_empty() {
        f.template.clone_from(&e.template);
    }
    if f.user == 0 {
        f.user = e.user;
    }
}

/// Edits the fact `e` speaks of (made when new) and records how its contribution to the
/// rollups changed.
fn edit_fact<T>(
    state: &mut State,
    e: &Event,
    direction: Direction,
    buckets: Buckets,
    changes: &mut RollupChanges,
    edit: impl FnOnce(&mut Fact) -> T,
) -> T {
    let key = state.key_of(e);
    let fact = state
        .facts
        .entry(key.clone())
        .or_insert_with(|| Fact::new(key.clone(), &e.number, e.user, direction));
    let before = fact.contribution();
    let result = edit(fact);
    let after = fact.contribution();
    if let Some(wamid) = &fact.wamid {
        state.by_wamid.insert(wamid.clone(), key.clone());
    }
    record(buckets, before, after, changes);
    state.touched_facts.insert(key);
    result
}

/// The rollups lose a fact's old contribution and gain its new one.
fn record(
    buckets: Buckets,
    before: Option<(
        i64,
        crate::rollup::MessageDims,
        crate::rollup::MessageCounts,
    )>,
    after: Option<(
        i64,
        crate::rollup::MessageDims,
        crate::rollup::MessageCounts,
    )>,
    changes: &mut RollupChanges,
) {
    if before == after {
        return;
    }
    if let Some((at, dims, counts)) = before {
        changes.add_messages(buckets, at, &dims, -counts);
    }
    if let Some((at, dims, counts)) = after {
        changes.add_messages(buckets, at, &dims, counts);
    }
}

/// A message between a user and the business at `e.at_ms`: the user is active, the session
/// goes on or a new one begins, and a new turn begins when the other side wrote last (which
/// answers that side's turn; our answer to a user's turn gives a response time).
fn interaction(
    buckets: Buckets,
    e: &Event,
    direction: Direction,
    state: &mut State,
    changes: &mut RollupChanges,
) {
    if e.user == 0 {
        return;
    }
    let key = (e.number.clone(), e.user);
    let user = state
        .users
        .entry(key.clone())
        .or_insert_with(|| UserState::new(&e.number, e.user));
    let at = e.at_ms;
    changes.conversation(buckets, at, &e.number, |c| c.users.insert(e.user));

    if user.session_last_ms == 0 || at - user.session_last_ms > SESSION_GAP_MS {
        user.session_started_ms = at;
        changes.conversation(buckets, at, &e.number, |c| c.counts.sessions += 1);
    } else if at > user.session_last_ms {
        let longer = at - user.session_last_ms;
        changes.conversation(buckets, user.session_started_ms, &e.number, |c| {
            c.counts.session_ms += longer;
        });
    }
    user.session_last_ms = user.session_last_ms.max(at);

    if user.last_direction != Some(direction) {
        if let Some(previous) = user.last_direction {
            let waited = (at - user.turn_started_ms).max(0);
            changes.conversation(
                buckets,
                user.turn_started_ms,
                &e.number,
                |c| match previous {
                    Direction::Inbound => {
                        c.counts.user_turns_answered += 1;
                        c.response_ms.add(waited as f64);
                    }
                    Direction::Outbound => c.counts.business_turns_answered += 1,
                },
            );
            if previous == Direction::Inbound {
                changes.responses.push((at, waited));
            }
        }
        changes.conversation(buckets, at, &e.number, |c| match direction {
            Direction::Inbound => c.counts.user_turns += 1,
            Direction::Outbound => c.counts.business_turns += 1,
        });
        user.last_direction = Some(direction);
        user.turn_started_ms = at;
    }
    state.touched_users.insert(key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::{Grain, NumberKey};

    const HOUR: i64 = 3_600_000;
    const T: i64 = 1_800_000_000_000;

    fn event(kind: EventKind, at_ms: i64, status: &str) -> Event {
        Event {
            seq: 0,
            kind,
            at_ms,
            number: "1".into(),
            user: 7,
            wamid: if kind == EventKind::MessageReceived {
                "wamid.IN".into()
            } else {
                "wamid.OUT".into()
            },
            outbound_id: i64::from(kind != EventKind::MessageReceived),
            message_type: "text".into(),
            status: status.into(),
            error_code: 0,
            template: String::new(),
            pricing_category: String::new(),
            timestamp_s: 0,
            context_wamid: String::new(),
            reply_id: String::new(),
        }
    }

    /// The hour's conversation rollup after `events`, and the response times they gave.
    fn hour_after(events: &[Event]) -> (crate::rollup::ConversationDelta, Vec<(i64, i64)>) {
        let mut state = State::new(Vec::new(), Vec::new());
        let mut changes = apply(Buckets { interval_ms: HOUR }, events, &mut state);
        let key = NumberKey {
            grain: Grain::Hour,
            bucket_ms: T.div_euclid(HOUR) * HOUR,
            number: "1".into(),
        };
        let hour = changes
            .conversations
            .remove(&key)
            .expect("the hour's rollup");
        (hour, changes.responses)
    }

    #[test]
    fn a_failed_status_first_is_a_sent_message_that_failed_not_a_refused_one() {
        let mut failed = event(EventKind::StatusUpdated, T, "failed");
        failed.error_code = 131_026;
        let mut state = State::new(Vec::new(), Vec::new());
        let changes = apply(Buckets { interval_ms: HOUR }, &[failed], &mut state);
        let counts: Vec<_> = changes
            .messages
            .iter()
            .filter(|(k, _)| k.grain == Grain::Hour)
            .map(|(k, c)| (k.dims.error_code, c.messages_out, c.failed, c.rejected))
            .collect();
        assert_eq!(counts, [(131_026, 1, 1, 0)]);
    }

    #[test]
    fn our_answer_counts_once_whether_its_record_or_metas_status_comes_first() {
        let received = event(EventKind::MessageReceived, T, "");
        let accepted = event(EventKind::SendAccepted, T + 80, "");
        let sent = event(EventKind::StatusUpdated, T + 50, "sent");
        for (events, answered_at) in [
            ([received.clone(), accepted.clone(), sent.clone()], T + 80),
            ([received.clone(), sent.clone(), accepted.clone()], T + 50),
        ] {
            let (hour, responses) = hour_after(&events);
            let c = hour.counts;
            assert_eq!(
                (c.user_turns, c.user_turns_answered, c.business_turns),
                (1, 1, 1),
                "{events:?}"
            );
            assert_eq!(hour.response_ms.count(), 1);
            assert_eq!(responses, [(answered_at, answered_at - T)]);
        }
    }
}

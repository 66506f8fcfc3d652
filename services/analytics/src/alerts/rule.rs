//! When an alert fires and when it resolves, without I/O or clocks: the live window and
//! rate-limit's buckets become [`Observation`]s, and a [`Track`] per (kind, subject) turns the
//! sequence of its readings into [`Step`]s.
//!
//! Three things keep alerts from flapping:
//! - hysteresis: an alert fires above its threshold and resolves only below
//!   `threshold * `[`RESOLVE_FACTOR`]; in between it keeps whatever state it has;
//! - a "for" duration: the condition to fire (or to resolve) must hold at
//!   [`FOR_EVALUATIONS`] consecutive evaluations; one odd evaluation changes nothing;
//! - minimum samples: the error rate needs [`MIN_ATTEMPTS`] attempts in the window and the
//!   response time [`MIN_RESPONSES`] replies; with fewer, the reading is [`Reading::Unknown`].
use super::{AlertConfig, AlertKind, BucketUsage, SUBJECT_ALL};
use crate::live::Window;

/// A firing alert resolves only once its reading is below `threshold * RESOLVE_FACTOR` (below
/// 4% for an error-rate threshold of 5%): between that level and the threshold it keeps
/// firing, so a reading hovering around the threshold does not fire and resolve it in turn.
pub const RESOLVE_FACTOR: f64 = 0.8;

/// How many consecutive evaluations a condition (to fire, or to resolve) must hold before the
/// alert changes: with the default 1 s interval, two seconds. A burst that lands in one
/// evaluation, or one evaluation just under the resolve level, changes nothing.
pub const FOR_EVALUATIONS: u32 = 2;

/// ERROR_RATE is judged only over at least this many send attempts in the window: one failure
/// in three sends is not a 33% error rate worth waking anyone for.
pub const MIN_ATTEMPTS: u64 = 20;

/// RESPONSE_TIME is judged only over at least this many response times in the window.
pub const MIN_RESPONSES: u64 = 5;

/// A threshold and how a reading is compared with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub threshold: f64,
    /// Fires at the threshold already (rate-limit's warning), not only above it.
    pub inclusive: bool,
}

impl Rule {
    /// Fires strictly above `threshold`.
    pub fn above(threshold: f64) -> Self {
        Self {
            threshold,
            inclusive: false,
        }
    }

    /// Fires at or above `threshold`.
    pub fn at_or_above(threshold: f64) -> Self {
        Self {
            threshold,
            inclusive: true,
        }
    }

    /// Whether `value` calls for firing.
    pub fn breached(&self, value: f64) -> bool {
        if self.inclusive {
            value >= self.threshold
        } else {
            value > self.threshold
        }
    }

    /// Below this a firing alert may resolve.
    pub fn resolve_level(&self) -> f64 {
        self.threshold * RESOLVE_FACTOR
    }

    /// Whether `value` calls for resolving.
    pub fn recovered(&self, value: f64) -> bool {
        value < self.resolve_level()
    }
}

/// What one evaluation reads for one (kind, subject).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// A value to judge.
    Value(f64),
    /// Nothing is wrong because nothing is there: no send attempts (or no replies) in the
    /// window at all, or a rate-limit bucket that is no longer listed. Never fires; resolves a
    /// firing alert (after [`FOR_EVALUATIONS`], as a low value would).
    Clear,
    /// Cannot tell: too few samples, or rate-limit could not be asked. The state stays as it
    /// is, and a streak toward a change starts over.
    Unknown,
}

impl Reading {
    pub fn value(self) -> Option<f64> {
        match self {
            Self::Value(v) => Some(v),
            Self::Clear | Self::Unknown => None,
        }
    }
}

/// What a reading calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Hold,
    Fire,
    Resolve,
}

/// The state of one (kind, subject): firing or not, and how many consecutive evaluations have
/// called for the other state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Track {
    firing: bool,
    streak: u32,
}

impl Track {
    /// The track of an alert that is firing (loaded from the store at start).
    pub fn firing() -> Self {
        Self {
            firing: true,
            streak: 0,
        }
    }

    pub fn is_firing(&self) -> bool {
        self.firing
    }

    /// Neither firing nor on its way to fire: nothing to remember.
    pub fn is_idle(&self) -> bool {
        !self.firing && self.streak == 0
    }

    /// Judges one evaluation's reading. The state itself changes only by [`Track::confirm`],
    /// once the change is stored: until then the same step is asked for again.
    pub fn observe(&mut self, rule: Rule, reading: Reading) -> Step {
        let toward_change = match (reading, self.firing) {
            (Reading::Unknown, _) => false,
            (Reading::Clear, firing) => firing,
            (Reading::Value(v), false) => rule.breached(v),
            (Reading::Value(v), true) => rule.recovered(v),
        };
        if !toward_change {
            self.streak = 0;
            return Step::Hold;
        }
        self.streak = self.streak.saturating_add(1);
        match (self.streak >= FOR_EVALUATIONS, self.firing) {
            (false, _) => Step::Hold,
            (true, false) => Step::Fire,
            (true, true) => Step::Resolve,
        }
    }

    /// The change `step` asked for was made.
    pub fn confirm(&mut self, step: Step) {
        match step {
            Step::Hold => return,
            Step::Fire => self.firing = true,
            Step::Resolve => self.firing = false,
        }
        self.streak = 0;
    }
}

/// One (kind, subject) as one evaluation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub kind: AlertKind,
    pub subject: String,
    pub rule: Rule,
    pub reading: Reading,
    /// What the alert says if this observation fires it.
    pub summary: String,
}

/// The error rate and the p95 response time of `window`, both about [`SUBJECT_ALL`].
pub fn observe_window(config: &AlertConfig, window: &Window) -> [Observation; 2] {
    let span = format!("the last {} s", config.window.as_secs());
    let error = Rule::above(config.error_rate_threshold);
    let (attempts, failed) = (window.attempts, window.failed_attempts);
    let error_rate = match window.error_rate(MIN_ATTEMPTS) {
        Some(rate) => Reading::Value(rate),
        None if attempts == 0 => Reading::Clear,
        None => Reading::Unknown,
    };
    let rate_pct = error_rate.value().unwrap_or(0.0) * 100.0;
    let response = Rule::above(config.response_time_threshold_ms as f64);
    let replies = window.responses.count();
    let p95 = match window.responses.quantile(0.95) {
        Some(p95) if replies >= MIN_RESPONSES => Reading::Value(p95),
        Some(_) => Reading::Unknown,
        None => Reading::Clear,
    };
    [
        Observation {
            kind: AlertKind::ErrorRate,
            subject: SUBJECT_ALL.into(),
            rule: error,
            reading: error_rate,
            summary: format!(
                "{rate_pct:.1}% of send attempts failed in {span} ({failed} of {attempts}), \
                 above {:.1}%",
                error.threshold * 100.0
            ),
        },
        Observation {
            kind: AlertKind::ResponseTime,
            subject: SUBJECT_ALL.into(),
            rule: response,
            reading: p95,
            summary: format!(
                "p95 response time {:.0} ms over {replies} replies in {span}, above {} ms",
                p95.value().unwrap_or(0.0),
                config.response_time_threshold_ms
            ),
        },
    ]
}

/// The usage of rate-limit's buckets (`None`: rate-limit could not be asked), and the buckets
/// being watched (`scope/key`: firing, or on their way to) that the answer no longer lists.
pub fn observe_usage<'a>(
    config: &AlertConfig,
    usage: Option<&[BucketUsage]>,
    watched: impl IntoIterator<Item = &'a str>,
) -> Vec<Observation> {
    let rule = Rule::at_or_above(config.rate_limit_warning);
    let listed = usage.unwrap_or_default();
    let mut observations: Vec<Observation> = listed
        .iter()
        .map(|bucket| Observation {
            kind: AlertKind::RateLimit,
            subject: bucket.subject(),
            rule,
            reading: Reading::Value(bucket.usage_ratio),
            summary: format!(
                "rate-limit bucket {} at {:.0}% of its capacity, warning from {:.0}%",
                bucket.subject(),
                bucket.usage_ratio * 100.0,
                rule.threshold * 100.0
            ),
        })
        .collect();
    for subject in watched {
        if observations.iter().any(|o| o.subject == subject) {
            continue;
        }
        observations.push(Observation {
            kind: AlertKind::RateLimit,
            subject: subject.to_owned(),
            rule,
            reading: if usage.is_some() {
                Reading::Clear
            } else {
                Reading::Unknown
            },
            summary: format!("rate-limit bucket {subject} is no longer among the most used"),
        });
    }
    observations
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::{Event, EventKind};
    use crate::live::Live;

    /// Observes `readings` in turn, confirming every change asked for (as the evaluator does
    /// once the store took it); answers the steps.
    fn run(track: &mut Track, rule: Rule, readings: &[Reading]) -> Vec<Step> {
        readings
            .iter()
            .map(|reading| {
                let step = track.observe(rule, *reading);
                track.confirm(step);
                step
            })
            .collect()
    }

    fn values(values: &[f64]) -> Vec<Reading> {
        values.iter().map(|v| Reading::Value(*v)).collect()
    }

    use Step::{Fire, Hold, Resolve};

    #[test]
    fn fires_once_above_stays_firing_above_the_resolve_level_and_resolves_once_below() {
        let rule = Rule::above(0.05);
        let mut track = Track::default();
        // Above twice: fires at the second; above still: nothing more.
        let steps = run(&mut track, rule, &values(&[0.10, 0.12, 0.20, 0.08]));
        assert_eq!(steps, [Hold, Fire, Hold, Hold]);
        assert!(track.is_firing());
        // Between 4% (the resolve level) and 5%: still firing.
        let steps = run(
            &mut track,
            rule,
            &values(&[0.049, 0.045, 0.0401, 0.041, 0.0401]),
        );
        assert_eq!(steps, [Hold; 5]);
        assert!(track.is_firing());
        // Below 4% twice: resolves, once.
        let steps = run(&mut track, rule, &values(&[0.039, 0.01, 0.0, 0.0]));
        assert_eq!(steps, [Hold, Resolve, Hold, Hold]);
        assert!(track.is_idle());
    }

    #[test]
    fn a_reading_hovering_around_a_level_never_flaps() {
        let rule = Rule::above(0.05);
        let mut track = Track::default();
        let around_threshold: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 0.051 } else { 0.049 })
            .collect();
        let steps = run(&mut track, rule, &values(&around_threshold));
        assert!(
            steps.iter().all(|s| *s == Hold),
            "one evaluation above is not enough"
        );
        // Firing, the same hovering resolves nothing, and neither does hovering around 4%.
        run(&mut track, rule, &values(&[0.06, 0.06]));
        assert!(track.is_firing());
        let steps = run(&mut track, rule, &values(&around_threshold));
        assert!(steps.iter().all(|s| *s == Hold));
        let around_resolve: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 0.039 } else { 0.041 })
            .collect();
        let steps = run(&mut track, rule, &values(&around_resolve));
        assert!(steps.iter().all(|s| *s == Hold));
        assert!(track.is_firing());
    }

    #[test]
    fn an_unknown_reading_keeps_the_state_and_breaks_a_streak() {
        let rule = Rule::above(0.05);
        let mut track = Track::default();
        let readings = [
            Reading::Value(0.5),
            Reading::Unknown,
            Reading::Value(0.5),
            Reading::Unknown,
        ];
        assert_eq!(run(&mut track, rule, &readings), [Hold; 4]);
        let mut track = Track::firing();
        let readings = [
            Reading::Value(0.0),
            Reading::Unknown,
            Reading::Value(0.0),
            Reading::Unknown,
            Reading::Unknown,
        ];
        assert_eq!(run(&mut track, rule, &readings), [Hold; 5]);
        assert!(track.is_firing(), "unknown never resolves");
    }

    #[test]
    fn nothing_there_never_fires_and_resolves_a_firing_alert() {
        let rule = Rule::above(0.05);
        let mut track = Track::default();
        assert_eq!(run(&mut track, rule, &[Reading::Clear; 3]), [Hold; 3]);
        let mut track = Track::firing();
        let steps = run(&mut track, rule, &[Reading::Clear, Reading::Clear]);
        assert_eq!(steps, [Hold, Resolve]);
    }

    #[test]
    fn a_change_not_confirmed_is_asked_for_again() {
        let rule = Rule::above(0.05);
        let mut track = Track::default();
        assert_eq!(track.observe(rule, Reading::Value(0.5)), Hold);
        assert_eq!(track.observe(rule, Reading::Value(0.5)), Fire);
        // The store failed: not confirmed; the next evaluation asks again.
        assert_eq!(track.observe(rule, Reading::Value(0.5)), Fire);
        track.confirm(Fire);
        assert_eq!(track.observe(rule, Reading::Value(0.5)), Hold);
    }

    #[test]
    fn the_rate_limit_warning_fires_at_the_level_itself() {
        let rule = Rule::at_or_above(0.8);
        let mut track = Track::default();
        let steps = run(
            &mut track,
            rule,
            &values(&[0.8, 0.8, 0.7, 0.641, 0.639, 0.5]),
        );
        assert_eq!(steps, [Hold, Fire, Hold, Hold, Hold, Resolve]);
    }

    fn event(kind: EventKind, at_ms: i64) -> Event {
        Event {
            seq: 1,
            kind,
            at_ms,
            number: "1".into(),
            user: 1,
            wamid: String::new(),
            outbound_id: 1,
            message_type: String::new(),
            status: String::new(),
            error_code: 0,
            template: String::new(),
            pricing_category: String::new(),
            timestamp_s: 0,
            context_wamid: String::new(),
            reply_id: String::new(),
        }
    }

    /// `ok` accepted sends and `failed` failed ones at `at_ms`.
    fn sends(live: &Live, ok: usize, failed: usize, at_ms: i64) {
        let mut events = vec![event(EventKind::SendAccepted, at_ms); ok];
        events.extend(vec![event(EventKind::SendFailed, at_ms); failed]);
        live.record(&events, &[], at_ms);
    }

    fn config() -> AlertConfig {
        AlertConfig {
            window: Duration::from_secs(60),
            ..AlertConfig::default()
        }
    }

    /// The error-rate reading of the window at `now_ms`.
    fn error_rate(live: &Live, now_ms: i64) -> Reading {
        let [error, _] = observe_window(&config(), &live.window(now_ms));
        assert_eq!(
            (error.kind, error.subject.as_str()),
            (AlertKind::ErrorRate, "all")
        );
        error.reading
    }

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn the_error_rate_needs_enough_attempts_in_the_window() {
        let live = Live::new(60_000);
        let rule = Rule::above(0.05);
        let mut track = Track::default();
        // One failure in three sends: not judged, whatever the rate.
        sends(&live, 2, 1, T0);
        let readings = [error_rate(&live, T0), error_rate(&live, T0 + 1_000)];
        assert_eq!(readings, [Reading::Unknown; 2]);
        assert_eq!(run(&mut track, rule, &readings), [Hold, Hold]);
        // 25 attempts, 5 failed (20%): fires at the second evaluation.
        sends(&live, 18, 4, T0 + 2_000);
        let readings = [error_rate(&live, T0 + 2_000), error_rate(&live, T0 + 3_000)];
        assert_eq!(readings, [Reading::Value(0.2); 2]);
        assert_eq!(run(&mut track, rule, &readings), [Hold, Fire]);
        // Clean sends dilute it to 5/100: still firing (above 4%).
        sends(&live, 75, 0, T0 + 10_000);
        let readings = [
            error_rate(&live, T0 + 10_000),
            error_rate(&live, T0 + 11_000),
        ];
        assert_eq!(readings, [Reading::Value(0.05); 2]);
        assert_eq!(run(&mut track, rule, &readings), [Hold, Hold]);
        // Once the failures leave the window (a minute later): 0 of 75, resolved.
        let readings = [
            error_rate(&live, T0 + 66_000),
            error_rate(&live, T0 + 67_000),
        ];
        assert_eq!(readings, [Reading::Value(0.0); 2]);
        assert_eq!(run(&mut track, rule, &readings), [Hold, Resolve]);
        // And with nothing at all in the window, the reading is clear.
        assert_eq!(error_rate(&live, T0 + 200_000), Reading::Clear);
    }

    #[test]
    fn the_response_time_is_the_p95_of_enough_replies() {
        let live = Live::new(60_000);
        let four: Vec<(i64, i64)> = vec![(T0, 5_000); 4];
        live.record(&[], &four, T0);
        let [_, response] = observe_window(&config(), &live.window(T0));
        assert_eq!(
            (response.kind, response.reading),
            (AlertKind::ResponseTime, Reading::Unknown)
        );
        live.record(&[], &[(T0, 5_000)], T0);
        let [_, response] = observe_window(&config(), &live.window(T0));
        let p95 = response.reading.value().expect("five replies are enough");
        assert!((p95 - 5_000.0).abs() < 50.0, "{p95}");
        assert!(response.rule.breached(p95) && response.rule.threshold == 3_000.0);
        assert!(
            response.summary.contains("5 replies"),
            "{}",
            response.summary
        );
        let [_, response] = observe_window(&config(), &live.window(T0 + 120_000));
        assert_eq!(response.reading, Reading::Clear);
    }

    #[test]
    fn buckets_are_observed_by_scope_and_key_and_missing_ones_as_clear_or_unknown() {
        let usage = [BucketUsage {
            scope: "102290129340398".into(),
            key: "throughput:106540352242922".into(),
            usage_ratio: 0.9,
        }];
        let watched = ["102290129340398/pair:106540352242922:15551230001"];
        let seen = observe_usage(&config(), Some(&usage), watched);
        let readings: Vec<(&str, Reading)> = seen
            .iter()
            .map(|o| (o.subject.as_str(), o.reading))
            .collect();
        assert_eq!(
            readings,
            [
                (
                    "102290129340398/throughput:106540352242922",
                    Reading::Value(0.9)
                ),
                (
                    "102290129340398/pair:106540352242922:15551230001",
                    Reading::Clear
                ),
            ]
        );
        assert!(
            seen.iter()
                .all(|o| o.kind == AlertKind::RateLimit && o.rule.inclusive)
        );
        // rate-limit not answering: whatever is watched is unknown, nothing else is seen.
        let seen = observe_usage(&config(), None, watched);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].reading, Reading::Unknown);
    }
}

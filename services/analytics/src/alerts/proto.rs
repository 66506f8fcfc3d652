//! The alerts' proto forms, for the gRPC adapter (the only reader of them).
use wamesh_proto::analytics::v1 as pb;

use super::{Alert, AlertChange, AlertKind};

impl From<AlertKind> for pb::AlertKind {
    fn from(kind: AlertKind) -> Self {
        match kind {
            AlertKind::ErrorRate => Self::ErrorRate,
            AlertKind::ResponseTime => Self::ResponseTime,
            AlertKind::RateLimit => Self::RateLimit,
        }
    }
}

impl From<&Alert> for pb::Alert {
    fn from(a: &Alert) -> Self {
        let state = if a.is_firing() {
            pb::AlertState::Firing
        } else {
            pb::AlertState::Resolved
        };
        Self {
            id: a.id,
            kind: pb::AlertKind::from(a.kind) as i32,
            subject: a.subject.clone(),
            state: state as i32,
            value: a.value,
            peak: a.peak,
            threshold: a.threshold,
            fired_at_unix_ms: a.fired_at_ms,
            resolved_at_unix_ms: a.resolved_at_ms.unwrap_or(0),
            summary: a.summary.clone(),
        }
    }
}

impl From<AlertChange> for pb::AlertChange {
    fn from(change: AlertChange) -> Self {
        Self {
            alert: Some(pb::Alert::from(&change.alert)),
            initial: change.initial,
        }
    }
}

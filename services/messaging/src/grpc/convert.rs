//! Stored rows into proto messages, and the small checks and page tokens the reads share.
use wamesh_proto::messaging::v1 as pb;

use crate::error::MessagingError;
use crate::store::{
    ContactCursor, Direction, MessageCursor, StoredContact, StoredMessage, StoredStatus,
};
use crate::window::ServiceWindow;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// The window of a user whose newest message is `last_inbound_s`, seen at `now_s`.
pub fn service_window(last_inbound_s: i64, now_s: i64) -> pb::ServiceWindow {
    let window = ServiceWindow { last_inbound_s };
    pb::ServiceWindow {
        open: window.is_open_at(now_s),
        expires_at_unix_s: window.expires_at_s(),
        last_inbound_unix_s: last_inbound_s,
    }
}

/// A conversation is named by a business number and a contact; both are required.
pub(super) fn require_conversation(
    phone_number_id: &str,
    contact_id: &str,
) -> Result<(), MessagingError> {
    require("business_phone_number_id", phone_number_id)?;
    require("contact_id", contact_id)
}

pub(super) fn require(field: &str, value: &str) -> Result<(), MessagingError> {
    if value.is_empty() {
        Err(MessagingError::InvalidArgument(format!(
            "{field}: required"
        )))
    } else {
        Ok(())
    }
}

pub(super) fn page_size(requested: u32) -> u32 {
    if requested == 0 {
        DEFAULT_PAGE
    } else {
        requested.min(MAX_PAGE)
    }
}

pub(super) fn bad_token() -> MessagingError {
    MessagingError::InvalidArgument("page_token: not a token this service gave".into())
}

pub(super) fn parse_message_cursor(token: &str) -> Result<Option<MessageCursor>, MessagingError> {
    if token.is_empty() {
        return Ok(None);
    }
    let (ts, id) = token.split_once('.').ok_or_else(bad_token)?;
    Ok(Some(MessageCursor {
        timestamp_s: ts.parse().map_err(|_| bad_token())?,
        id: id.parse().map_err(|_| bad_token())?,
    }))
}

pub(super) fn parse_contact_cursor(token: &str) -> Result<Option<ContactCursor>, MessagingError> {
    if token.is_empty() {
        return Ok(None);
    }
    let text =
        String::from_utf8(hex::decode(token).map_err(|_| bad_token())?).map_err(|_| bad_token())?;
    let mut parts = text.splitn(3, '\n');
    let (Some(ms), Some(phone), Some(contact)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad_token());
    };
    Ok(Some(ContactCursor {
        last_seen_ms: ms.parse().map_err(|_| bad_token())?,
        business_phone_number_id: phone.to_owned(),
        contact_id: contact.to_owned(),
    }))
}

pub(super) fn direction_from_pb(direction: i32) -> Option<Direction> {
    match pb::Direction::try_from(direction) {
        Ok(pb::Direction::Inbound) => Some(Direction::Inbound),
        Ok(pb::Direction::Outbound) => Some(Direction::Outbound),
        _ => None,
    }
}

pub(super) fn counts(c: crate::store::UpdateCounts) -> pb::UpdateCounts {
    pb::UpdateCounts {
        messages: c.messages,
        statuses: c.statuses,
        contacts: c.contacts,
        errors: c.errors,
        other_fields: c.other_fields,
    }
}

pub(super) fn errors_from_json(json: &str) -> Vec<pb::WhatsAppError> {
    let items: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    items
        .iter()
        .map(|e| pb::WhatsAppError {
            code: e["code"].as_i64().unwrap_or(0),
            title: e["title"].as_str().unwrap_or_default().to_owned(),
            message: e["message"].as_str().unwrap_or_default().to_owned(),
            details: e["details"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

pub(super) fn message_to_pb(m: StoredMessage, timeline: Vec<StoredStatus>) -> pb::Message {
    let media = m.media_id.is_some().then(|| pb::Media {
        id: m.media_id.unwrap_or_default(),
        mime_type: m.media_mime_type.unwrap_or_default(),
        sha256: m.media_sha256.unwrap_or_default(),
        caption: m.media_caption.unwrap_or_default(),
        filename: m.media_filename.unwrap_or_default(),
        url: m.media_url.unwrap_or_default(),
    });
    let location = match (m.latitude, m.longitude) {
        (Some(latitude), Some(longitude)) => Some(pb::Location {
            latitude,
            longitude,
            name: m.location_name.unwrap_or_default(),
            address: m.location_address.unwrap_or_default(),
        }),
        _ => None,
    };
    pb::Message {
        id: m.id,
        wamid: m.wamid,
        direction: if m.direction == Direction::Inbound.as_str() {
            pb::Direction::Inbound
        } else {
            pb::Direction::Outbound
        } as i32,
        business_phone_number_id: m.business_phone_number_id,
        contact_id: m.contact_id,
        r#type: m.kind,
        timestamp_unix_s: m.timestamp_s,
        received_at_unix_ms: m.received_at_ms,
        text: m.text_body.unwrap_or_default(),
        media,
        location,
        reply_id: m.reply_id.unwrap_or_default(),
        reply_title: m.reply_title.unwrap_or_default(),
        target_message_id: m.target_message_id.unwrap_or_default(),
        reaction_emoji: m.reaction_emoji.unwrap_or_default(),
        context_message_id: m.context_message_id.unwrap_or_default(),
        forwarded: m.forwarded,
        status: m.status.unwrap_or_default(),
        timeline: timeline.into_iter().map(status_to_pb).collect(),
        errors: errors_from_json(&m.errors_json),
        raw_json: m.raw_json,
        origin: m.origin,
    }
}

pub(super) fn status_to_pb(s: StoredStatus) -> pb::StatusEvent {
    pb::StatusEvent {
        errors: errors_from_json(&s.errors_json),
        status: s.status,
        timestamp_unix_s: s.timestamp_s,
        received_at_unix_ms: s.received_at_ms,
        pricing_category: s.pricing_category.unwrap_or_default(),
        conversation_id: s.conversation_id.unwrap_or_default(),
    }
}

pub(super) fn contact_to_pb(c: StoredContact) -> pb::Contact {
    pb::Contact {
        business_phone_number_id: c.business_phone_number_id,
        contact_id: c.contact_id,
        wa_id: c.wa_id.unwrap_or_default(),
        user_id: c.user_id.unwrap_or_default(),
        profile_name: c.profile_name.unwrap_or_default(),
        first_seen_unix_ms: c.first_seen_ms,
        last_seen_unix_ms: c.last_seen_ms,
        last_inbound_unix_s: c.last_inbound_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        assert_eq!(
            parse_message_cursor("17.4").unwrap(),
            Some(MessageCursor {
                timestamp_s: 17,
                id: 4
            })
        );
        assert!(parse_message_cursor("x.y").is_err());
        let token = hex::encode("5\np\nc");
        assert_eq!(
            parse_contact_cursor(&token).unwrap().unwrap().contact_id,
            "c"
        );
        assert!(parse_contact_cursor("zz").is_err());
    }
}

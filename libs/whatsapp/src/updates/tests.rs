use super::*;

use wamesh_testkit::webhook_corpus as corpus;

fn updates_of(name: &str) -> Updates {
    let (_, body) = corpus().into_iter().find(|(n, _)| n == name).unwrap();
    Updates::from_webhook(&Webhook::parse(&body).unwrap())
}

#[test]
fn every_corpus_payload_parses_into_updates() {
    let files = corpus();
    assert_eq!(files.len(), 74);
    for (name, body) in files {
        let updates =
            Updates::from_webhook(&Webhook::parse(&body).unwrap_or_else(|e| panic!("{name}: {e}")));
        let [m, s, c, e, o] = updates.counts();
        assert!(m + s + o > 0, "{name}: nothing extracted");
        assert!(m + s + c + e + o > 0);
    }
}

#[test]
fn text_messages_carry_their_body_contact_and_time() {
    let u = updates_of("message__text.json");
    let m = &u.messages[0];
    assert_eq!(m.direction, Direction::Inbound);
    assert_eq!(m.kind, "text");
    assert!(m.text.as_deref().is_some_and(|t| !t.is_empty()));
    assert!(!m.contact_id.is_empty() && m.timestamp > 1_600_000_000);
    assert_eq!(u.contacts.len(), 1);
    assert_eq!(u.contacts[0].contact_id, m.contact_id);
}

#[test]
fn media_and_location_and_replies_go_into_columns() {
    let image = &updates_of("message__image.json").messages[0];
    assert!(
        image
            .media
            .as_ref()
            .is_some_and(|media| !media.id.is_empty() && !media.mime_type.is_empty())
    );
    let location = &updates_of("message__current_location.json").messages[0];
    assert!(location.latitude.is_some() && location.longitude.is_some());
    let button = &updates_of("callback_button__button.json").messages[0];
    assert!(button.reply_id.is_some() && button.reply_title.is_some());
    let list = &updates_of("callback_selection__description.json").messages[0];
    assert!(list.reply_id.is_some() && list.reply_title.is_some());
    let flow = &updates_of("flow_completion__completion.json").messages[0];
    assert_eq!(flow.reply_id.as_deref(), Some("flow"));
}

#[test]
fn reactions_edits_and_revokes_name_their_target() {
    let reaction = &updates_of("message__reaction.json").messages[0];
    assert!(reaction.target_message_id.is_some());
    assert!(
        reaction
            .reaction_emoji
            .as_deref()
            .is_some_and(|e| !e.is_empty())
    );
    let removed = &updates_of("message__unreaction_no_emoji.json").messages[0];
    assert_eq!(removed.reaction_emoji.as_deref(), Some(""));
    let edit = &updates_of("edited_message__image.json").messages[0];
    assert_eq!(edit.kind, "edit");
    assert!(edit.target_message_id.is_some());
    assert_eq!(
        edit.media.as_ref().unwrap().caption,
        "Updated image caption"
    );
    let revoke = &updates_of("deleted_message__revoke.json").messages[0];
    assert_eq!(
        revoke.target_message_id.as_deref(),
        Some("<ORIGINAL_WHATSAPP_MESSAGE_ID>")
    );
}

#[test]
fn unsupported_messages_and_value_errors_keep_their_errors() {
    let unsupported = &updates_of("message__unsupported.json").messages[0];
    assert_eq!(unsupported.errors[0].code, 131051);
    let with_err = updates_of("message__interactive_message_with_err.json");
    assert_eq!(
        with_err.messages.len(),
        1,
        "a message without its type object is still kept"
    );
    assert_eq!(with_err.errors[0].error.code, 131000);
    assert_eq!(
        with_err.errors[0].error.details,
        "Unsupported webhook payload"
    );
}

#[test]
fn statuses_keep_errors_pricing_and_recipient() {
    let failed = &updates_of("message_status__failed.json").statuses[0];
    assert_eq!(failed.status, "failed");
    assert!(failed.errors[0].code > 0);
    let sent = &updates_of("message_status__with_tracker.json").statuses[0];
    assert_eq!(sent.pricing_category.as_deref(), Some("service"));
    assert_eq!(sent.recipient_id, "972987654321");
}

#[test]
fn statuses_carry_the_callback_data_we_sent() {
    let tracked = &updates_of("message_status__with_tracker.json").statuses[0];
    assert_eq!(tracked.callback_data.as_deref(), Some("some data"));
    let untracked = &updates_of("message_status__failed.json").statuses[0];
    assert_eq!(untracked.callback_data, None);
}

#[test]
fn echoes_are_outbound_and_other_fields_are_kept_whole() {
    let echo = &updates_of("outgoing_message__text.json").messages[0];
    assert_eq!(echo.direction, Direction::Outbound);
    assert_eq!(echo.origin, "echo");
    assert_eq!(echo.contact_id, "<WHATSAPP_USER_PHONE_NUMBER>");
    let call = updates_of("call_status__call_status.json");
    assert!(
        call.statuses.is_empty(),
        "call statuses are not message statuses"
    );
    assert_eq!(call.other[0].field, "calls");
    let account = updates_of("account_update__account_deleted.json");
    assert_eq!(account.other[0].field, "account_update");
}

#[test]
fn the_same_change_has_the_same_dedup_key() {
    let a = updates_of("template_status_update__approved.json");
    let b = updates_of("template_status_update__approved.json");
    let c = updates_of("template_status_update__rejected.json");
    assert_eq!(a.other[0].dedup_key, b.other[0].dedup_key);
    assert_ne!(a.other[0].dedup_key, c.other[0].dedup_key);
}

#[test]
fn a_message_without_an_id_is_kept_as_another_update() {
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"p"},"messages":[{"type":"text"}]}}]}]}"#;
    let u = Updates::from_webhook(&Webhook::parse(body).unwrap());
    assert!(u.messages.is_empty());
    assert_eq!(u.other.len(), 1);
    assert_eq!(u.other[0].business_phone_number_id, "p");
}

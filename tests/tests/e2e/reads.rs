//! Reading messaging back over gRPC: thin helpers that page through lists and name what failed.
use tonic::{Code, Status};
use wamesh_proto::messaging::v1::{
    Contact, Direction, GetMessageRequest, GetWebhookDeliveryRequest, ListContactsRequest,
    ListMessagesRequest, ListWebhookEventsRequest, Message, WebhookDelivery, WebhookEvent,
    get_message_request,
};

use crate::harness::Grpc;

/// One message by wamid, looked up in one direction.
pub async fn message(grpc: &Grpc, wamid: &str, direction: Direction) -> Result<Message, Status> {
    let request = GetMessageRequest {
        key: Some(get_message_request::Key::Wamid(wamid.to_owned())),
        direction: direction.into(),
    };
    let reply = grpc.clone().get_message(request).await?.into_inner();
    Ok(reply.message.expect("GetMessage answers a message"))
}

/// One message that must exist.
pub async fn existing_message(grpc: &Grpc, wamid: &str, direction: Direction) -> Message {
    message(grpc, wamid, direction)
        .await
        .unwrap_or_else(|s| panic!("GetMessage({wamid}, {direction:?}): {s}"))
}

/// Asserts that no message has this wamid, in either direction.
pub async fn assert_no_message(grpc: &Grpc, wamid: &str) {
    for direction in [Direction::Inbound, Direction::Outbound] {
        let answer = message(grpc, wamid, direction).await;
        assert_eq!(
            answer.as_ref().map_err(Status::code).err(),
            Some(Code::NotFound),
            "GetMessage({wamid}, {direction:?}) should be NOT_FOUND: {answer:?}"
        );
    }
}

/// One entry of the delivery log.
pub async fn delivery(grpc: &Grpc, id: i64) -> Result<WebhookDelivery, Status> {
    Ok(grpc
        .clone()
        .get_webhook_delivery(GetWebhookDeliveryRequest { id })
        .await?
        .into_inner())
}

/// One entry of the delivery log that must exist.
pub async fn existing_delivery(grpc: &Grpc, id: i64) -> WebhookDelivery {
    delivery(grpc, id)
        .await
        .unwrap_or_else(|s| panic!("GetWebhookDelivery({id}): {s}"))
}

/// One page of a conversation.
pub async fn messages_page(
    grpc: &Grpc,
    contact_id: &str,
    page_size: u32,
    page_token: String,
) -> (Vec<Message>, String) {
    let request = ListMessagesRequest {
        business_phone_number_id: crate::payloads::PHONE.to_owned(),
        contact_id: contact_id.to_owned(),
        page_size,
        page_token,
    };
    let reply = grpc
        .clone()
        .list_messages(request)
        .await
        .unwrap_or_else(|s| panic!("ListMessages({contact_id}): {s}"))
        .into_inner();
    (reply.messages, reply.next_page_token)
}

/// The whole conversation with `contact_id` on [`crate::payloads::PHONE`], newest first.
pub async fn conversation(grpc: &Grpc, contact_id: &str, page_size: u32) -> Vec<Message> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = messages_page(grpc, contact_id, page_size, token).await;
        all.extend(page);
        if next.is_empty() {
            return all;
        }
        token = next;
    }
}

/// Every webhook event of `field` (every field when empty), oldest first.
pub async fn events(grpc: &Grpc, field: &str) -> Vec<WebhookEvent> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListWebhookEventsRequest {
            field: field.to_owned(),
            page_size: 500,
            page_token,
        };
        let reply = grpc
            .clone()
            .list_webhook_events(request)
            .await
            .unwrap_or_else(|s| panic!("ListWebhookEvents({field:?}): {s}"))
            .into_inner();
        all.extend(reply.events);
        if reply.next_page_token.is_empty() {
            return all;
        }
        page_token = reply.next_page_token;
    }
}

/// Every contact of every business number.
pub async fn contacts(grpc: &Grpc) -> Vec<Contact> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListContactsRequest {
            business_phone_number_id: String::new(),
            page_size: 500,
            page_token,
        };
        let reply = grpc
            .clone()
            .list_contacts(request)
            .await
            .unwrap_or_else(|s| panic!("ListContacts: {s}"))
            .into_inner();
        all.extend(reply.contacts);
        if reply.next_page_token.is_empty() {
            return all;
        }
        page_token = reply.next_page_token;
    }
}

/// The statuses of a message's timeline, oldest first.
pub fn timeline(message: &Message) -> Vec<&str> {
    message.timeline.iter().map(|e| e.status.as_str()).collect()
}

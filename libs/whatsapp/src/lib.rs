//! The WhatsApp Cloud API domain: what Meta sends us, what we send Meta, and how both are checked.
//!
//! - [`signature`]: `X-Hub-Signature-256`, HMAC-SHA256 over the raw body, constant time.
//! - [`envelope`]: the `whatsapp_business_account` envelope, parsed leniently (unknown fields
//!   and future types are kept as raw JSON, never rejected).
//! - [`updates`]: an envelope flattened into the updates wamesh stores: messages, statuses,
//!   contacts, errors and every other webhook field.
//! - [`status`]: delivery statuses and their order (the state machine never moves backwards).
//! - [`outgoing`]: a message the business sends: Meta's limits on it and its Graph API body.
//! - [`graph`]: the Graph API client that sends it, and what Meta's answer means (accepted,
//!   transient, permanent, or in doubt).
//! - [`labels`]: fields, message types, statuses and error codes as bounded metric labels.
#![forbid(unsafe_code)]

pub mod envelope;
pub mod graph;
pub mod labels;
pub mod outgoing;
pub mod signature;
pub mod status;
pub mod template;
pub mod updates;

pub use envelope::{Change, Entry, PayloadError, Webhook};
pub use graph::{
    Accepted, ErrorClass, GraphClient, GraphError, GraphSetupError, SendError, classify_code,
};
pub use outgoing::{InvalidField, OutgoingMessage, normalize_recipient};
pub use signature::{SIGNATURE_HEADER, SignatureError, sign, verify_signature};
pub use status::DeliveryStatus;
pub use updates::{
    ApiError, ContactUpdate, Direction, ErrorUpdate, Media, MessageUpdate, OtherUpdate,
    StatusUpdate, Updates,
};

/// Meta's limit on a webhook body: 3 MB.
pub const MAX_WEBHOOK_BYTES: usize = 3 * 1024 * 1024;

//! A message the business sends: what it holds, whether Meta would take it, and the Graph API
//! body that sends it.
//!
//! The types mirror `SendMessageRequest`'s content in `messaging.proto`, so converting a request
//! is a plain mapping; [`MediaSource::from_id_or_link`] and [`normalize_recipient`] do the two
//! parts that are not. [`OutgoingMessage::validate`] (in `validate.rs`) checks every one of Meta's
//! limits before anything is stored, naming the proto field at fault; an invalid message would
//! only come back from Meta as an error after queueing. [`OutgoingMessage::to_graph_body`] (in
//! `render.rs`) writes the exact body Meta's `POST /{phone_number_id}/messages` takes.
//!
//! Optional strings are `Option`s: proto3 cannot tell an empty string from an absent one, so the
//! conversion maps `""` to `None`; a `Some` that is empty is refused by name, never sent.

mod render;
mod validate;

/// One message to send, checked with [`OutgoingMessage::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    /// The user's phone number, digits only (see [`normalize_recipient`]).
    pub to: String,
    /// Meta's `context.message_id`: the message this one replies to.
    pub reply_to: Option<String>,
    /// Meta's `biz_opaque_callback_data` (at most 512 characters): echoed back in every status
    /// webhook of this message ([`crate::StatusUpdate::callback_data`]), so a status can be tied
    /// to our message even when the send's answer, and with it the wamid, was lost.
    pub callback_data: Option<String>,
    pub content: Content,
}

/// What a message says: one of the four kinds `SendMessageRequest` offers.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(Text),
    Template(Template),
    Interactive(Interactive),
    Media(Media),
}

/// A free-form text (only inside the 24-hour customer service window).
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    /// At most 4096 characters.
    pub body: String,
    /// Lets WhatsApp show a preview of the first link in the body.
    pub preview_url: bool,
}

/// A message template registered at Meta, with the values of its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    /// Meta's language code, e.g. `en` or `en_US`.
    pub language: String,
    /// The header's parameter, for headers that take one.
    pub header: Option<Parameter>,
    /// In order for positional templates (`{{1}}`...), each named for named ones.
    pub body: Vec<Parameter>,
    pub buttons: Vec<ButtonParameter>,
}

/// A header or body parameter of a template.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// Named templates: the parameter's name; positional templates: `None`.
    pub name: Option<String>,
    pub value: ParameterValue,
}

/// A parameter's value. Body parameters are text, currency or date-time; a header takes text,
/// media or a location.
#[derive(Debug, Clone, PartialEq)]
pub enum ParameterValue {
    Text(String),
    /// `amount_1000` is the amount times 1000 (10.99 is 10990); `fallback_value` is what users
    /// see where the currency cannot be localised.
    Currency {
        fallback_value: String,
        code: String,
        amount_1000: i64,
    },
    /// A date and time as the user should read it (Meta's `date_time.fallback_value`).
    DateTime(String),
    Image(MediaRef),
    Video(MediaRef),
    Document(MediaRef),
    Location {
        latitude: f64,
        longitude: f64,
        name: String,
        address: String,
    },
}

/// Media given to a template header.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRef {
    pub source: MediaSource,
    /// Documents only: the file name users see.
    pub filename: Option<String>,
}

/// Media by Meta's media id (uploaded before) or by a public http(s) link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaSource {
    Id(String),
    Link(String),
}

impl MediaSource {
    /// The source of the proto's `id` / `link` pair, which must hold exactly one of them.
    /// `at` is the proto path of the message holding them (`media`, `template.header.image`):
    /// the error names `{at}.link` when both are given, `{at}.id` when neither is.
    pub fn from_id_or_link(id: &str, link: &str, at: &str) -> Result<Self, InvalidField> {
        match (id.is_empty(), link.is_empty()) {
            (false, true) => Ok(Self::Id(id.to_owned())),
            (true, false) => Ok(Self::Link(link.to_owned())),
            (false, false) => Err(InvalidField::new(
                format!("{at}.link"),
                "give the media's id or its link, not both",
            )),
            (true, true) => Err(InvalidField::new(
                format!("{at}.id"),
                "the media's id or its link is required",
            )),
        }
    }
}

/// The kind of template button a [`ButtonParameter`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonSubType {
    QuickReply,
    Url,
    CopyCode,
    Flow,
}

impl ButtonSubType {
    /// Meta's `sub_type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QuickReply => "quick_reply",
            Self::Url => "url",
            Self::CopyCode => "copy_code",
            Self::Flow => "flow",
        }
    }
}

/// The parameter of one of a template's buttons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonParameter {
    pub sub_type: ButtonSubType,
    /// The button's zero-based position in the template (at most 9).
    pub index: u32,
    /// quick_reply: the payload returned when the user taps it; url: the dynamic URL suffix;
    /// copy_code: the code; flow: the flow token.
    pub value: String,
}

/// An interactive message: reply buttons or a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Interactive {
    pub header_text: Option<String>,
    pub body: String,
    pub footer: Option<String>,
    pub action: InteractiveAction,
}

/// What the user can tap in an interactive message.
#[derive(Debug, Clone, PartialEq)]
pub enum InteractiveAction {
    /// 1 to 3 reply buttons.
    Buttons(Vec<ReplyButton>),
    /// A list opened by a button labelled `button`.
    List {
        button: String,
        sections: Vec<ListSection>,
    },
}

/// A reply button: its `id` comes back in the user's `button_reply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyButton {
    pub id: String,
    pub title: String,
}

/// A section of a list message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSection {
    /// Required when the list has more than one section.
    pub title: Option<String>,
    pub rows: Vec<ListRow>,
}

/// A row of a list: its `id` comes back in the user's `list_reply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRow {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
}

/// The kind of a media message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaKind {
    /// Meta's message `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Document => "document",
            Self::Sticker => "sticker",
        }
    }

    /// Only images, videos and documents take a caption.
    pub fn takes_caption(self) -> bool {
        matches!(self, Self::Image | Self::Video | Self::Document)
    }
}

/// An image, video, audio, document or sticker message.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    pub kind: MediaKind,
    pub source: MediaSource,
    /// Images, videos and documents only; at most 1024 characters.
    pub caption: Option<String>,
    /// Documents only.
    pub filename: Option<String>,
}

impl Content {
    /// Meta's message `type`: "text", "template", "interactive", "image", "video", "audio",
    /// "document" or "sticker".
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text(_) => "text",
            Self::Template(_) => "template",
            Self::Interactive(_) => "interactive",
            Self::Media(media) => media.kind.as_str(),
        }
    }
}

impl OutgoingMessage {
    /// Meta's message `type` (see [`Content::kind`]).
    pub fn kind(&self) -> &'static str {
        self.content.kind()
    }
}

/// A field of a message that Meta would refuse, and why. `field` is the proto path the caller
/// set (`interactive.buttons.buttons[1].title`), so the gRPC error points at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidField {
    pub field: String,
    pub problem: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// The fewest and most digits a recipient's number may have.
const RECIPIENT_DIGITS: std::ops::RangeInclusive<usize> = 6..=20;

/// A phone number in international format as Meta takes it: digits only. A leading `+`, spaces,
/// dashes, dots and parentheses are dropped (`+1 (555) 010-2030` is `15550102030`); anything
/// else, or fewer than 6 or more than 20 digits, is refused (field `to`). The number itself is
/// never part of the error.
pub fn normalize_recipient(to: &str) -> Result<String, InvalidField> {
    let trimmed = to.trim();
    if trimmed.is_empty() {
        return Err(InvalidField::new(
            "to",
            "the recipient's number is required",
        ));
    }
    let unsigned = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let mut digits = String::with_capacity(unsigned.len());
    for c in unsigned.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '-' | '.' | '(' | ')' => {}
            c if c.is_whitespace() => {}
            _ => {
                return Err(InvalidField::new(
                    "to",
                    "must be a phone number in international format: digits, with an optional \
                     leading + and spaces, dashes, dots or parentheses",
                ));
            }
        }
    }
    if !RECIPIENT_DIGITS.contains(&digits.len()) {
        return Err(InvalidField::new(
            "to",
            format!(
                "must have {} to {} digits, not {}",
                RECIPIENT_DIGITS.start(),
                RECIPIENT_DIGITS.end(),
                digits.len()
            ),
        ));
    }
    Ok(digits)
}

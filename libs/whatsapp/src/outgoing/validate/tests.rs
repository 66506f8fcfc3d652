use crate::outgoing::*;

fn message(content: Content) -> OutgoingMessage {
    OutgoingMessage {
        to: "15550102030".into(),
        reply_to: None,
        callback_data: None,
        content,
    }
}

fn text(body: &str) -> OutgoingMessage {
    message(Content::Text(Text {
        body: body.into(),
        preview_url: false,
    }))
}

fn media(kind: MediaKind, caption: Option<&str>, filename: Option<&str>) -> OutgoingMessage {
    message(Content::Media(Media {
        kind,
        source: MediaSource::Id("123".into()),
        caption: caption.map(Into::into),
        filename: filename.map(Into::into),
    }))
}

fn buttons(titles: &[&str]) -> Interactive {
    Interactive {
        header_text: None,
        body: "Pick one".into(),
        footer: None,
        action: InteractiveAction::Buttons(
            titles
                .iter()
                .enumerate()
                .map(|(i, title)| ReplyButton {
                    id: format!("b{i}"),
                    title: (*title).into(),
                })
                .collect(),
        ),
    }
}

fn row(id: &str) -> ListRow {
    ListRow {
        id: id.into(),
        title: "A row".into(),
        description: None,
    }
}

fn list(sections: Vec<ListSection>) -> Interactive {
    Interactive {
        header_text: None,
        body: "Pick one".into(),
        footer: None,
        action: InteractiveAction::List {
            button: "Open".into(),
            sections,
        },
    }
}

fn section(title: Option<&str>, rows: Vec<ListRow>) -> ListSection {
    ListSection {
        title: title.map(Into::into),
        rows,
    }
}

/// Asserts the message is refused on `field` with a problem mentioning `needle`.
#[track_caller]
fn refused(message: &OutgoingMessage, field: &str, needle: &str) {
    let err = message
        .validate()
        .expect_err(&format!("{field} should be refused"));
    assert_eq!(err.field, field, "{err}");
    assert!(err.problem.contains(needle), "{err} should say {needle:?}");
    assert_eq!(err.to_string(), format!("{}: {}", err.field, err.problem));
}

fn with_interactive(interactive: Interactive) -> OutgoingMessage {
    message(Content::Interactive(interactive))
}

#[test]
fn valid_messages_of_every_kind_pass() {
    let mut reply = text("Hello");
    reply.reply_to = Some("wamid.X".into());
    reply.callback_data = Some("c".repeat(512));
    let valid = [
        reply,
        text(&"é".repeat(4096)),
        media(MediaKind::Image, Some("A photo"), None),
        media(MediaKind::Document, Some("Invoice"), Some("invoice.pdf")),
        media(MediaKind::Audio, None, None),
        media(MediaKind::Sticker, None, None),
        with_interactive(buttons(&["Yes", "No", "Later"])),
        with_interactive(list(vec![section(None, vec![row("a")])])),
        with_interactive(list(vec![
            section(Some("One"), (0..5).map(|i| row(&format!("a{i}"))).collect()),
            section(Some("Two"), (0..5).map(|i| row(&format!("b{i}"))).collect()),
        ])),
    ];
    for message in valid {
        assert_eq!(message.validate(), Ok(()), "{message:?}");
    }
}

#[test]
fn recipients_are_normalised_to_digits() {
    assert_eq!(
        normalize_recipient("+1 (555) 010-2030").unwrap(),
        "15550102030"
    );
    assert_eq!(
        normalize_recipient("44.20.7946.0958").unwrap(),
        "442079460958"
    );
    assert_eq!(
        normalize_recipient(" 5511987654321 ").unwrap(),
        "5511987654321"
    );
    for (bad, needle) in [
        ("", "required"),
        ("  ", "required"),
        ("+1 555 CALL NOW", "digits"),
        ("++15550102030", "digits"),
        ("1555010203#0", "digits"),
        ("12345", "6 to 20 digits, not 5"),
        ("123456789012345678901", "not 21"),
    ] {
        let err = normalize_recipient(bad).unwrap_err();
        assert_eq!(err.field, "to");
        assert!(err.problem.contains(needle), "{bad:?}: {err}");
    }
}

#[test]
fn the_recipient_must_be_normalised_and_the_reply_id_not_empty() {
    let mut raw = text("Hi");
    raw.to = "+1 555 010 2030".into();
    refused(&raw, "to", "normalize_recipient");
    raw.to = "123".into();
    refused(&raw, "to", "6 to 20 digits");
    let mut reply = text("Hi");
    reply.reply_to = Some(" ".into());
    refused(&reply, "reply_to_wamid", "blank");
    let mut tracked = text("Hi");
    tracked.callback_data = Some("c".repeat(513));
    refused(&tracked, "biz_opaque_callback_data", "at most 512");
}

#[test]
fn text_bodies_are_required_and_counted_in_characters() {
    refused(&text(""), "text.body", "required");
    refused(&text(" \n "), "text.body", "required");
    // 4097 characters of two bytes each: refused on the count of characters.
    refused(&text(&"é".repeat(4097)), "text.body", "at most 4096");
}

#[test]
fn media_takes_one_source_and_captions_and_filenames_only_where_meta_does() {
    assert_eq!(
        MediaSource::from_id_or_link("1", "", "media"),
        Ok(MediaSource::Id("1".into()))
    );
    assert_eq!(
        MediaSource::from_id_or_link("", "https://x.io/a", "media"),
        Ok(MediaSource::Link("https://x.io/a".into()))
    );
    let both = MediaSource::from_id_or_link("1", "https://x.io/a", "media").unwrap_err();
    assert_eq!(both.field, "media.link");
    assert!(both.problem.contains("not both"));
    let neither = MediaSource::from_id_or_link("", "", "template.header.image").unwrap_err();
    assert_eq!(neither.field, "template.header.image.id");

    for bad_link in [
        "ftp://example.com/a.jpg",
        "example.com/a.jpg",
        "https://",
        "https:// example.com/a.jpg",
    ] {
        let mut m = media(MediaKind::Image, None, None);
        if let Content::Media(media) = &mut m.content {
            media.source = MediaSource::Link(bad_link.into());
        }
        refused(&m, "media.link", "http or https URL");
    }
    let mut empty_id = media(MediaKind::Image, None, None);
    if let Content::Media(media) = &mut empty_id.content {
        media.source = MediaSource::Id(String::new());
    }
    refused(&empty_id, "media.id", "required");

    refused(
        &media(MediaKind::Video, Some(&"c".repeat(1025)), None),
        "media.caption",
        "at most 1024",
    );
    for kind in [MediaKind::Audio, MediaKind::Sticker] {
        refused(
            &media(kind, Some("hi"), None),
            "media.caption",
            "only image",
        );
    }
    refused(
        &media(MediaKind::Image, None, Some("a.jpg")),
        "media.filename",
        "only documents",
    );
    refused(
        &media(MediaKind::Document, Some(""), None),
        "media.caption",
        "blank",
    );
}

#[test]
fn interactive_texts_keep_to_meta_lengths() {
    let mut i = buttons(&["Yes"]);
    i.body = String::new();
    refused(&with_interactive(i), "interactive.body", "required");
    let mut i = buttons(&["Yes"]);
    i.body = "b".repeat(1025);
    refused(&with_interactive(i), "interactive.body", "at most 1024");
    let mut i = buttons(&["Yes"]);
    i.footer = Some("f".repeat(61));
    refused(&with_interactive(i), "interactive.footer", "at most 60");
    let mut i = buttons(&["Yes"]);
    i.header_text = Some("h".repeat(61));
    refused(
        &with_interactive(i),
        "interactive.header_text",
        "at most 60",
    );
}

#[test]
fn reply_buttons_are_one_to_three_with_unique_short_titles() {
    refused(
        &with_interactive(buttons(&[])),
        "interactive.buttons.buttons",
        "1 to 3 buttons, not 0",
    );
    refused(
        &with_interactive(buttons(&["A", "B", "C", "D"])),
        "interactive.buttons.buttons",
        "not 4",
    );
    refused(
        &with_interactive(buttons(&["Yes", "Yes"])),
        "interactive.buttons.buttons[1].title",
        "unique",
    );
    refused(
        &with_interactive(buttons(&["Yes", &"t".repeat(21)])),
        "interactive.buttons.buttons[1].title",
        "at most 20",
    );
    refused(
        &with_interactive(buttons(&["Yes", ""])),
        "interactive.buttons.buttons[1].title",
        "required",
    );
    let mut i = buttons(&["Yes", "No"]);
    if let InteractiveAction::Buttons(b) = &mut i.action {
        b[0].id = "i".repeat(257);
    }
    refused(
        &with_interactive(i),
        "interactive.buttons.buttons[0].id",
        "at most 256",
    );
    let mut i = buttons(&["Yes"]);
    if let InteractiveAction::Buttons(b) = &mut i.action {
        b[0].id = String::new();
    }
    refused(
        &with_interactive(i),
        "interactive.buttons.buttons[0].id",
        "required",
    );
}

#[test]
fn lists_keep_to_meta_section_and_row_limits() {
    let one = || vec![section(None, vec![row("a")])];
    let mut i = list(one());
    if let InteractiveAction::List { button, .. } = &mut i.action {
        *button = String::new();
    }
    refused(&with_interactive(i), "interactive.list.button", "required");
    let mut i = list(one());
    if let InteractiveAction::List { button, .. } = &mut i.action {
        *button = "b".repeat(21);
    }
    refused(
        &with_interactive(i),
        "interactive.list.button",
        "at most 20",
    );

    refused(
        &with_interactive(list(vec![])),
        "interactive.list.sections",
        "1 to 10 sections, not 0",
    );
    let eleven = (0..11)
        .map(|i| section(Some("S"), vec![row(&format!("r{i}"))]))
        .collect();
    refused(
        &with_interactive(list(eleven)),
        "interactive.list.sections",
        "not 11",
    );
    let rows = (0..11).map(|i| row(&format!("r{i}"))).collect();
    refused(
        &with_interactive(list(vec![section(None, rows)])),
        "interactive.list.sections",
        "11 rows in all: at most 10",
    );
    refused(
        &with_interactive(list(vec![
            section(Some("One"), vec![row("a")]),
            section(None, vec![row("b")]),
        ])),
        "interactive.list.sections[1].title",
        "more than one section",
    );
    refused(
        &with_interactive(list(vec![section(Some(&"s".repeat(25)), vec![row("a")])])),
        "interactive.list.sections[0].title",
        "at most 24",
    );
    refused(
        &with_interactive(list(vec![
            section(Some("One"), vec![row("a")]),
            section(Some("Two"), vec![]),
        ])),
        "interactive.list.sections[1].rows",
        "at least one row",
    );
    refused(
        &with_interactive(list(vec![
            section(Some("One"), vec![row("a"), row("b")]),
            section(Some("Two"), vec![row("c"), row("b")]),
        ])),
        "interactive.list.sections[1].rows[1].id",
        "repeats the id of interactive.list.sections[0].rows[1]",
    );
    let mut long = row("a");
    long.id = "i".repeat(201);
    refused(
        &with_interactive(list(vec![section(None, vec![long])])),
        "interactive.list.sections[0].rows[0].id",
        "at most 200",
    );
    let mut untitled = row("a");
    untitled.title = String::new();
    refused(
        &with_interactive(list(vec![section(None, vec![row("z"), untitled])])),
        "interactive.list.sections[0].rows[1].title",
        "required",
    );
    let mut long_title = row("a");
    long_title.title = "t".repeat(25);
    refused(
        &with_interactive(list(vec![section(None, vec![long_title])])),
        "interactive.list.sections[0].rows[0].title",
        "at most 24",
    );
    let mut described = row("a");
    described.description = Some("d".repeat(73));
    refused(
        &with_interactive(list(vec![section(
            None,
            vec![row("x"), row("y"), described],
        )])),
        "interactive.list.sections[0].rows[2].description",
        "at most 72",
    );
}

mod template;

//! Template messages: names, languages, parameters and buttons.
use super::*;

fn positional(value: ParameterValue) -> Parameter {
    Parameter { name: None, value }
}

fn named(name: &str, value: ParameterValue) -> Parameter {
    Parameter {
        name: Some(name.into()),
        value,
    }
}

fn template() -> Template {
    Template {
        name: "order_update".into(),
        language: "en_US".into(),
        header: None,
        body: vec![positional(ParameterValue::Text("Ana".into()))],
        buttons: vec![],
    }
}

fn image(source: MediaSource, filename: Option<&str>) -> ParameterValue {
    ParameterValue::Image(MediaRef {
        source,
        filename: filename.map(Into::into),
    })
}

fn quick_reply(index: u32, value: &str) -> ButtonParameter {
    ButtonParameter {
        sub_type: ButtonSubType::QuickReply,
        index,
        value: value.into(),
    }
}

fn with_template(change: impl FnOnce(&mut Template)) -> OutgoingMessage {
    let mut t = template();
    change(&mut t);
    message(Content::Template(t))
}

#[test]
fn valid_templates_pass() {
    let valid = [
        with_template(|_| {}),
        with_template(|t| {
            t.language = "fil".into();
            t.header = Some(positional(image(
                MediaSource::Link("https://cdn.example.com/p.jpg".into()),
                None,
            )));
            t.buttons = vec![
                quick_reply(0, &"p".repeat(128)),
                ButtonParameter {
                    sub_type: ButtonSubType::Url,
                    index: 9,
                    value: "a/b".into(),
                },
            ];
        }),
        with_template(|t| {
            t.header = Some(named("store", ParameterValue::Text("Main St".into())));
            t.body = vec![
                named("first_name", ParameterValue::Text("Ana".into())),
                named("due", ParameterValue::DateTime("Friday".into())),
            ];
        }),
        with_template(|t| {
            t.header = Some(positional(ParameterValue::Document(MediaRef {
                source: MediaSource::Id("77".into()),
                filename: Some("receipt.pdf".into()),
            })));
            t.body.push(positional(ParameterValue::Currency {
                fallback_value: "$10.99".into(),
                code: "USD".into(),
                amount_1000: 10990,
            }));
        }),
        with_template(|t| {
            t.header = Some(positional(ParameterValue::Location {
                latitude: -90.0,
                longitude: 180.0,
                name: "South Pole".into(),
                address: String::new(),
            }));
        }),
    ];
    for message in valid {
        assert_eq!(message.validate(), Ok(()), "{message:?}");
    }
}

#[test]
fn template_names_and_languages_follow_meta_form() {
    refused(
        &with_template(|t| t.name = String::new()),
        "template.name",
        "required",
    );
    refused(
        &with_template(|t| t.name = "Order-Update".into()),
        "template.name",
        "lowercase letters, digits and underscores",
    );
    refused(
        &with_template(|t| t.name = "n".repeat(513)),
        "template.name",
        "at most 512",
    );
    refused(
        &with_template(|t| t.language = String::new()),
        "template.language",
        "required",
    );
    for bad in ["english", "en-US", "EN", "en_us", "e"] {
        refused(
            &with_template(|t| t.language = bad.into()),
            "template.language",
            "like en or en_US",
        );
    }
}

#[test]
fn template_parameters_are_checked_where_they_sit() {
    refused(
        &with_template(|t| t.body.push(positional(ParameterValue::Text(String::new())))),
        "template.body[1].text",
        "required",
    );
    refused(
        &with_template(|t| t.body[0] = positional(ParameterValue::Text("x".repeat(32769)))),
        "template.body[0].text",
        "at most 32768",
    );
    refused(
        &with_template(|t| {
            t.body.push(positional(ParameterValue::Currency {
                fallback_value: "$1".into(),
                code: "DOLLAR".into(),
                amount_1000: 1000,
            }))
        }),
        "template.body[1].currency.code",
        "3 letters",
    );
    refused(
        &with_template(|t| {
            t.body.push(positional(ParameterValue::Currency {
                fallback_value: String::new(),
                code: "USD".into(),
                amount_1000: 1000,
            }))
        }),
        "template.body[1].currency.fallback_value",
        "required",
    );
    refused(
        &with_template(|t| {
            t.body
                .push(positional(ParameterValue::DateTime(" ".into())))
        }),
        "template.body[1].date_time",
        "required",
    );
    refused(
        &with_template(|t| {
            t.body
                .push(positional(image(MediaSource::Id("1".into()), None)));
        }),
        "template.body[1].image",
        "text, currency or date_time",
    );
    refused(
        &with_template(|t| t.header = Some(positional(ParameterValue::DateTime("x".into())))),
        "template.header.date_time",
        "text, image, video, document or location",
    );
    refused(
        &with_template(|t| {
            t.header = Some(positional(image(
                MediaSource::Link("file:///etc".into()),
                None,
            )))
        }),
        "template.header.image.link",
        "http or https URL",
    );
    refused(
        &with_template(|t| {
            t.header = Some(positional(image(
                MediaSource::Id("1".into()),
                Some("a.jpg"),
            )))
        }),
        "template.header.image.filename",
        "only documents",
    );
    refused(
        &with_template(|t| {
            t.header = Some(positional(ParameterValue::Location {
                latitude: 91.0,
                longitude: 0.0,
                name: String::new(),
                address: String::new(),
            }))
        }),
        "template.header.location.latitude",
        "between -90 and 90",
    );
    refused(
        &with_template(|t| {
            t.header = Some(positional(ParameterValue::Location {
                latitude: 0.0,
                longitude: f64::NAN,
                name: String::new(),
                address: String::new(),
            }))
        }),
        "template.header.location.longitude",
        "between -180 and 180",
    );
}

#[test]
fn template_parameters_are_all_named_or_all_positional() {
    refused(
        &with_template(|t| {
            t.body
                .push(named("city", ParameterValue::Text("Rome".into())))
        }),
        "template.body[1].name",
        "must be unset: template.body[0] is positional",
    );
    refused(
        &with_template(|t| {
            t.header = Some(named("store", ParameterValue::Text("Main St".into())));
        }),
        "template.body[0].name",
        "is required: template.header is named",
    );
    refused(
        &with_template(|t| {
            t.body = vec![
                named("city", ParameterValue::Text("Rome".into())),
                named("city", ParameterValue::Text("Oslo".into())),
            ]
        }),
        "template.body[1].name",
        "repeats the name of template.body[0]",
    );
    refused(
        &with_template(|t| t.body = vec![named("First Name", ParameterValue::Text("A".into()))]),
        "template.body[0].name",
        "lowercase letters",
    );
    refused(
        &with_template(|t| {
            t.header = Some(named("photo", image(MediaSource::Id("1".into()), None)));
        }),
        "template.header.name",
        "only text, currency and date_time",
    );
}

#[test]
fn template_buttons_have_one_parameter_per_index_up_to_nine() {
    refused(
        &with_template(|t| t.buttons = vec![quick_reply(10, "p")]),
        "template.buttons[0].index",
        "at most 9",
    );
    refused(
        &with_template(|t| t.buttons = vec![quick_reply(1, "p"), quick_reply(1, "q")]),
        "template.buttons[1].index",
        "repeats the index of template.buttons[0]",
    );
    refused(
        &with_template(|t| t.buttons = vec![quick_reply(0, &"p".repeat(129))]),
        "template.buttons[0].value",
        "at most 128",
    );
    refused(
        &with_template(|t| {
            t.buttons = vec![ButtonParameter {
                sub_type: ButtonSubType::CopyCode,
                index: 0,
                value: String::new(),
            }]
        }),
        "template.buttons[0].value",
        "required",
    );
}

use serde_json::json;

use super::*;

fn spec(components: Value) -> TemplateSpec {
    TemplateSpec::parse(&components).unwrap_or_else(|e| panic!("{components}: {e}"))
}

fn parse_error(components: Value) -> String {
    match TemplateSpec::parse(&components) {
        Ok(spec) => panic!("{components} parsed into {spec:?}"),
        Err(e) => e,
    }
}

fn send(components: Value) -> Value {
    json!({"name": "t", "language": {"code": "en_US"}, "components": components})
}

fn text(value: &str) -> Value {
    json!({"type": "text", "text": value})
}

fn named(name: &str, value: &str) -> Value {
    json!({"type": "text", "text": value, "parameter_name": name})
}

#[test]
fn a_body_without_placeholders_is_positional_with_no_parameters() {
    let s = spec(json!([{"type": "BODY", "text": "Hello World"}]));
    assert_eq!(s.parameter_format, ParameterFormat::Positional);
    assert_eq!(s.header, None);
    assert!(s.body_parameters.is_empty() && s.header_parameters.is_empty());
    assert_eq!(s.body_text, "Hello World");
    assert!(s.buttons.is_empty());
    assert_eq!(s.check_send(&json!({"name": "hello_world"})), Ok(()));
}

#[test]
fn positional_placeholders_are_distinct_and_in_send_order() {
    let s = spec(json!([
        {"type": "header", "format": "text", "text": "Order {{1}}"},
        {"type": "BODY", "text": "Hi {{2}}, {{1}} and again {{1}}"},
        {"type": "FOOTER", "text": "Reply STOP to stop"},
    ]));
    assert_eq!(s.parameter_format, ParameterFormat::Positional);
    assert_eq!(s.header, Some(HeaderFormat::Text));
    assert_eq!(s.header_parameters, vec!["1"]);
    assert_eq!(s.body_parameters, vec!["1", "2"]);
}

#[test]
fn named_placeholders_keep_their_order_of_first_appearance() {
    let s = spec(json!([
        {"type": "HEADER", "format": "TEXT", "text": "For {{first_name}}"},
        {"type": "BODY", "text": "Your order {{order_id}} ships {{date}}; thanks {{first_name}}"},
    ]));
    assert_eq!(s.parameter_format, ParameterFormat::Named);
    assert_eq!(s.header_parameters, vec!["first_name"]);
    assert_eq!(s.body_parameters, vec!["order_id", "date", "first_name"]);
}

#[test]
fn media_headers_and_buttons_are_parsed() {
    let s = spec(json!([
        {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["4::aW"]}},
        {"type": "BODY", "text": "Look"},
        {"type": "BUTTONS", "buttons": [
            {"type": "QUICK_REPLY", "text": "Yes"},
            {"type": "URL", "text": "Track", "url": "https://x.example/{{1}}"},
            {"type": "URL", "text": "Home", "url": "https://x.example/"},
            {"type": "COPY_CODE", "example": "250FF"},
            {"type": "FLOW", "text": "Open", "flow_id": "1"},
            {"type": "PHONE_NUMBER", "text": "Call", "phone_number": "+15550000000"},
            {"type": "OTP", "otp_type": "COPY_CODE", "text": "Copy"},
        ]},
    ]));
    assert_eq!(s.header, Some(HeaderFormat::Image));
    assert!(s.header_parameters.is_empty());
    let buttons: Vec<(&str, bool, &str)> = s
        .buttons
        .iter()
        .map(|b| (b.sub_type.as_str(), b.takes_parameter, b.text.as_str()))
        .collect();
    assert_eq!(
        buttons,
        vec![
            ("quick_reply", false, "Yes"),
            ("url", true, "Track"),
            ("url", false, "Home"),
            ("copy_code", true, ""),
            ("flow", false, "Open"),
            ("phone_number", false, "Call"),
            ("url", true, "Copy"),
        ]
    );
    for (format, expected) in [
        ("VIDEO", HeaderFormat::Video),
        ("document", HeaderFormat::Document),
        ("LOCATION", HeaderFormat::Location),
    ] {
        let s = spec(json!([{"type": "HEADER", "format": format}, {"type": "BODY", "text": "b"}]));
        assert_eq!(s.header, Some(expected));
    }
}

#[test]
fn malformed_definitions_are_errors_naming_the_problem() {
    let cases = [
        (json!({"type": "BODY"}), "must be an array"),
        (
            json!([{"type": "HEADER", "format": "TEXT", "text": "x"}]),
            "no BODY",
        ),
        (
            json!([{"type": "BODY", "text": "{{1}} and {{name}}"}]),
            "mix numbers ({{1}}) and names ({{name}})",
        ),
        (
            json!([{"type": "HEADER", "format": "TEXT", "text": "{{1}}"},
                   {"type": "BODY", "text": "{{name}}"}]),
            "mix numbers",
        ),
        (
            json!([{"type": "BODY", "text": "{{1}} {{3}}"}]),
            "{{2}} is missing",
        ),
        (
            json!([{"type": "BODY", "text": "{{2}}"}]),
            "{{1}} is missing",
        ),
        (
            json!([{"type": "BODY", "text": "Hi {{First Name}}"}]),
            "{{First Name}} is not a placeholder",
        ),
        (
            json!([{"type": "BODY", "text": "Hi {{1"}]),
            "without its }}",
        ),
        (
            json!([{"type": "BODY", "text": ""}]),
            "BODY component has no text",
        ),
        (
            json!([{"type": "BODY", "text": "a"}, {"type": "BODY", "text": "b"}]),
            "a second BODY",
        ),
        (json!([{"type": "CAROUSEL"}]), "type CAROUSEL is not"),
        (json!([{"text": "x"}]), "components[0] has no type"),
        (
            json!([{"type": "HEADER", "format": "GIF"}, {"type": "BODY", "text": "b"}]),
            "format GIF",
        ),
        (
            json!([{"type": "HEADER", "format": "TEXT", "text": "{{1}} {{2}}"},
                   {"type": "BODY", "text": "b"}]),
            "at most 1 placeholder",
        ),
        (
            json!([{"type": "BODY", "text": "b"}, {"type": "BUTTONS", "buttons": []}]),
            "has no buttons",
        ),
    ];
    for (components, expected) in cases {
        let error = parse_error(components.clone());
        assert!(
            error.contains(expected),
            "{components}: {error:?} should name {expected:?}"
        );
    }
}

#[test]
fn positional_sends_need_the_right_count() {
    let s = spec(json!([{"type": "BODY", "text": "Hi {{1}}, order {{2}}"}]));
    let body = |parameters: Value| send(json!([{"type": "body", "parameters": parameters}]));
    assert_eq!(
        s.check_send(&body(json!([text("Ana"), text("42")]))),
        Ok(())
    );
    assert_eq!(
        s.check_send(&body(json!([text("Ana")]))),
        Err("body: expected 2 parameters, got 1".to_owned())
    );
    assert_eq!(
        s.check_send(&body(json!([text("a"), text("b"), text("c")]))),
        Err("body: expected 2 parameters, got 3".to_owned())
    );
    assert_eq!(
        s.check_send(&send(json!([]))),
        Err("body: expected 2 parameters, got 0".to_owned())
    );
    let money = json!({"type": "currency", "currency": {"fallback_value": "$1", "code": "USD", "amount_1000": 1000}});
    assert_eq!(s.check_send(&body(json!([text("Ana"), money]))), Ok(()));
    let error = s
        .check_send(&body(
            json!([text("Ana"), {"type": "image", "image": {"id": "1"}}]),
        ))
        .unwrap_err();
    assert!(error.contains("type image"), "{error}");
    let error = s
        .check_send(&body(json!([text("Ana"), {"type": "text"}])))
        .unwrap_err();
    assert!(error.contains("has no text"), "{error}");

    let plain = spec(json!([{"type": "BODY", "text": "Hello World"}]));
    assert_eq!(
        plain.check_send(&send(json!([{"type": "body", "parameters": [text("x")]}]))),
        Err("body: expected 0 parameters, got 1".to_owned())
    );
}

#[test]
fn named_sends_give_each_name_exactly_once() {
    let s = spec(json!([{"type": "BODY", "text": "Hi {{first_name}}, order {{order_id}}"}]));
    let body = |parameters: Value| send(json!([{"type": "body", "parameters": parameters}]));
    assert_eq!(
        s.check_send(&body(json!([
            named("order_id", "42"),
            named("first_name", "Ana")
        ]))),
        Ok(()),
        "named parameters come in any order"
    );
    let cases = [
        (
            json!([named("first_name", "Ana")]),
            "expected 2 parameters, got 1",
        ),
        (
            json!([named("first_name", "Ana"), named("first_name", "Bo")]),
            "\"first_name\" is given twice",
        ),
        (
            json!([named("first_name", "Ana"), named("city", "Rome")]),
            "\"city\" is not a placeholder",
        ),
        (
            json!([named("first_name", "Ana"), text("42")]),
            "has no parameter_name",
        ),
    ];
    for (parameters, expected) in cases {
        let error = s.check_send(&body(parameters.clone())).unwrap_err();
        assert!(error.contains(expected), "{parameters}: {error}");
        assert!(error.starts_with("body: "), "{error}");
    }
}

#[test]
fn header_parameters_match_the_header_kind() {
    let image = spec(json!([{"type": "HEADER", "format": "IMAGE"}, {"type": "BODY", "text": "b"}]));
    let header = |parameters: Value| send(json!([{"type": "header", "parameters": parameters}]));
    assert_eq!(
        image.check_send(&header(
            json!([{"type": "image", "image": {"link": "https://x/a.png"}}])
        )),
        Ok(())
    );
    let cases = [
        (json!([]), "header: expected 1 parameter (image), got 0"),
        (
            json!([text("x")]),
            "header: expected a image parameter, got text",
        ),
        (
            json!([{"type": "image", "image": {"caption": "c"}}]),
            "needs an id or a link",
        ),
        (json!([{"type": "image"}]), "has no image object"),
    ];
    for (parameters, expected) in cases {
        let error = image.check_send(&header(parameters.clone())).unwrap_err();
        assert!(error.contains(expected), "{parameters}: {error}");
    }
    let error = image.check_send(&send(json!([]))).unwrap_err();
    assert!(
        error.contains("expected 1 parameter (image), got 0"),
        "{error}"
    );

    let location =
        spec(json!([{"type": "HEADER", "format": "LOCATION"}, {"type": "BODY", "text": "b"}]));
    assert_eq!(
        location.check_send(&header(json!([{"type": "location",
            "location": {"latitude": "1.0", "longitude": "2.0"}}]))),
        Ok(())
    );
    assert!(
        location
            .check_send(&header(
                json!([{"type": "location", "location": {"name": "x"}}])
            ))
            .unwrap_err()
            .contains("latitude and longitude")
    );

    let titled = spec(
        json!([{"type": "HEADER", "format": "TEXT", "text": "Hi {{1}}"},
                             {"type": "BODY", "text": "b"}]),
    );
    assert_eq!(titled.check_send(&header(json!([text("Ana")]))), Ok(()));
    assert_eq!(
        titled.check_send(&send(json!([]))),
        Err("header: expected 1 parameter, got 0".to_owned())
    );
    let error = titled
        .check_send(&header(json!([{"type": "image", "image": {"id": "1"}}])))
        .unwrap_err();
    assert!(
        error.contains("expected a text parameter, got image"),
        "{error}"
    );

    let plain = spec(json!([{"type": "BODY", "text": "b"}]));
    assert_eq!(
        plain.check_send(&header(json!([text("x")]))),
        Err("header: expected 0 parameters, got 1".to_owned())
    );
}

#[test]
fn button_parameters_go_only_to_buttons_that_take_one() {
    let s = spec(json!([
        {"type": "BODY", "text": "b"},
        {"type": "BUTTONS", "buttons": [
            {"type": "QUICK_REPLY", "text": "Yes"},
            {"type": "URL", "text": "Track", "url": "https://x.example/{{1}}"},
            {"type": "PHONE_NUMBER", "text": "Call", "phone_number": "+15550000000"},
        ]},
    ]));
    let url =
        json!({"type": "button", "sub_type": "url", "index": "1", "parameters": [text("abc")]});
    assert_eq!(s.check_send(&send(json!([url.clone()]))), Ok(()));
    let payload = json!({"type": "button", "sub_type": "quick_reply", "index": 0,
                         "parameters": [{"type": "payload", "payload": "YES"}]});
    assert_eq!(
        s.check_send(&send(json!([payload, url.clone()]))),
        Ok(()),
        "a quick reply may carry its payload"
    );
    let cases = [
        (json!([]), "button 1 (url): expected 1 parameter, got 0"),
        (
            json!([url.clone(), {"type": "button", "sub_type": "url", "index": 1, "parameters": [text("x")]}]),
            "button 1: given twice",
        ),
        (
            json!([url.clone(), {"type": "button", "sub_type": "quick_reply", "index": 2}]),
            "sub_type quick_reply, but the template's button 2 is phone_number",
        ),
        (
            json!([url.clone(), {"type": "button", "sub_type": "phone_number", "index": 2,
                                 "parameters": [text("x")]}]),
            "button 2 (phone_number): takes no parameters, got 1",
        ),
        (
            json!([url.clone(), {"type": "button", "sub_type": "quick_reply", "index": 3}]),
            "button 3: the template has 3 buttons",
        ),
        (
            json!([{"type": "button", "sub_type": "url", "index": 1, "parameters": [{"type": "payload", "payload": "x"}]}]),
            "expected a text parameter",
        ),
        (
            json!([{"type": "button", "sub_type": "url", "parameters": [text("x")]}]),
            "needs its index",
        ),
        (
            json!([{"type": "button", "sub_type": "url", "index": 1, "parameters": [text("x"), text("y")]}]),
            "button 1 (url): expected 1 parameter, got 2",
        ),
        (
            json!([{"type": "footer"}]),
            "type footer is not header, body or button",
        ),
    ];
    for (components, expected) in cases {
        let error = s.check_send(&send(components.clone())).unwrap_err();
        assert!(error.contains(expected), "{components}: {error}");
    }
    assert!(
        s.check_send(&json!({"name": "t", "components": {}}))
            .unwrap_err()
            .contains("components must be an array")
    );
}

#[test]
fn copy_code_buttons_need_their_coupon() {
    let s = spec(json!([
        {"type": "BODY", "text": "b"},
        {"type": "BUTTONS", "buttons": [{"type": "COPY_CODE", "example": "250FF"}]},
    ]));
    let coupon = json!({"type": "button", "sub_type": "copy_code", "index": 0,
                        "parameters": [{"type": "coupon_code", "coupon_code": "250FF"}]});
    assert_eq!(s.check_send(&send(json!([coupon]))), Ok(()));
    assert_eq!(
        s.check_send(&send(json!([]))),
        Err("button 0 (copy_code): expected 1 parameter, got 0".to_owned())
    );
}

#[test]
fn render_fills_known_placeholders_and_leaves_the_rest() {
    assert_eq!(
        render(
            "Hi {{1}}, order {{2}} ({{1}})",
            &[("1", "Ana"), ("2", "42")]
        ),
        "Hi Ana, order 42 (Ana)"
    );
    assert_eq!(
        render("Hi {{first_name}} {{last}}", &[("first_name", "Ana")]),
        "Hi Ana {{last}}"
    );
    assert_eq!(render("no placeholders", &[("1", "x")]), "no placeholders");
    assert_eq!(render("open {{1", &[("1", "x")]), "open {{1");
    assert_eq!(render("{{1}}{{1}}", &[("1", "é")]), "éé");
}

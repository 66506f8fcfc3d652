//! Meta's message templates: a template's definition (the `components` array submitted to Meta's
//! message_templates API) parsed once into a [`TemplateSpec`], which then checks the `template`
//! object of a Graph API send the way Meta does (wrong parameters: 132000), and [`render`]
//! fills placeholders. The simulator answers sends with it; messaging validates sends with it
//! before queueing them, so both agree on what Meta would refuse.
//!
//! A template's placeholders are all positional (`{{1}}`, `{{2}}`...) or all named
//! (`{{first_name}}`): Meta's `parameter_format`. Header and body number their positional
//! placeholders separately, each from 1. URL buttons always use `{{1}}` for their dynamic
//! suffix, whatever the template's format.
use serde_json::Value;

/// How a template's placeholders are written, and so how a send gives its parameters: in
/// order (`Positional`) or each with its `parameter_name` (`Named`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterFormat {
    Positional,
    Named,
}

/// What a template's header holds; a media or location header takes one parameter of its kind
/// in every send (the image to show, the place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFormat {
    Text,
    Image,
    Video,
    Document,
    Location,
}

impl HeaderFormat {
    /// The `type` of the parameter a send gives for this header.
    pub fn parameter_type(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Video => "video",
            Self::Document => "document",
            Self::Location => "location",
        }
    }

    fn parse(format: &str) -> Option<Self> {
        Some(match format.to_ascii_uppercase().as_str() {
            "TEXT" => Self::Text,
            "IMAGE" => Self::Image,
            "VIDEO" => Self::Video,
            "DOCUMENT" => Self::Document,
            "LOCATION" => Self::Location,
            _ => return None,
        })
    }
}

/// One button of a template, as a send refers to it (`sub_type` and its zero-based `index`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonSpec {
    /// The `sub_type` a send names it with, lower case: quick_reply, url, copy_code, flow,
    /// phone_number... (an authentication template's OTP button is sent as `url`).
    pub sub_type: String,
    /// Every send must give it one parameter: a dynamic URL's suffix, a coupon code, a one-time
    /// password. (Quick replies and flows may give one, a payload or an action, but need not.)
    pub takes_parameter: bool,
    /// Its label (a quick reply comes back with it as `button.text` when tapped).
    pub text: String,
}

impl ButtonSpec {
    /// The parameter `type` a send may give this button, if it may give one at all; `Some("")`
    /// accepts any type (buttons this module does not know in detail).
    fn parameter_type(&self) -> Option<&'static str> {
        match self.sub_type.as_str() {
            "quick_reply" => Some("payload"),
            "flow" => Some("action"),
            "url" if self.takes_parameter => Some("text"),
            "copy_code" => Some("coupon_code"),
            "url" | "phone_number" | "voice_call" => None,
            _ => Some(""),
        }
    }
}

/// A template's definition, parsed once; what a send of it must give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    pub parameter_format: ParameterFormat,
    pub header: Option<HeaderFormat>,
    /// Text headers: their placeholder names ("1" or a name), 0 or 1 of them.
    pub header_parameters: Vec<String>,
    /// Body placeholders, distinct: named ones in order of first appearance, positional ones
    /// "1", "2".. in the order a send gives them.
    pub body_parameters: Vec<String>,
    pub body_text: String,
    pub buttons: Vec<ButtonSpec>,
}

impl TemplateSpec {
    /// Parses Meta's `components` array, as submitted to Meta's message_templates API:
    /// `[{"type":"HEADER","format":"TEXT","text":"Hi {{1}}"},{"type":"BODY","text":".."},
    /// {"type":"FOOTER","text":".."},{"type":"BUTTONS","buttons":[{"type":"QUICK_REPLY",
    /// "text":".."},{"type":"URL","text":"..","url":"https://x/{{1}}"}]}]`. Types and formats
    /// are matched in any case. Mixing numbers and names, gaps (`{{1}} {{3}}`), a malformed
    /// placeholder, a repeated or unknown component or a missing BODY is an error naming it.
    pub fn parse(components: &Value) -> Result<Self, String> {
        let components = components.as_array().ok_or("components must be an array")?;
        let mut header: Option<(HeaderFormat, Vec<String>)> = None;
        let mut body: Option<(String, Vec<String>)> = None;
        let mut buttons: Option<Vec<ButtonSpec>> = None;
        let mut footer = false;
        for (i, component) in components.iter().enumerate() {
            let kind = component
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("components[{i}] has no type"))?
                .to_ascii_uppercase();
            let repeated = match kind.as_str() {
                "HEADER" => header.is_some(),
                "BODY" => body.is_some(),
                "FOOTER" => footer,
                "BUTTONS" => buttons.is_some(),
                _ => {
                    return Err(format!(
                        "components[{i}]: type {kind} is not HEADER, BODY, FOOTER or BUTTONS"
                    ));
                }
            };
            if repeated {
                return Err(format!("components[{i}]: a second {kind} component"));
            }
            match kind.as_str() {
                "HEADER" => header = Some(parse_header(component)?),
                "BODY" => {
                    let text = component
                        .get("text")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                        .ok_or("body: the BODY component has no text")?;
                    body = Some((text.to_owned(), placeholders("body", text)?));
                }
                "FOOTER" => footer = true,
                _ => buttons = Some(parse_buttons(component)?),
            }
        }
        let (body_text, body_parameters) = body.ok_or("the template has no BODY component")?;
        let (header, header_parameters) = match header {
            Some((format, parameters)) => (Some(format), parameters),
            None => (None, Vec::new()),
        };
        let parameter_format = format_of(&header_parameters, &body_parameters)?;
        let mut spec = Self {
            parameter_format,
            header,
            header_parameters,
            body_parameters,
            body_text,
            buttons: buttons.unwrap_or_default(),
        };
        if parameter_format == ParameterFormat::Positional {
            spec.header_parameters = positional("header", spec.header_parameters)?;
            spec.body_parameters = positional("body", spec.body_parameters)?;
        }
        Ok(spec)
    }

    /// Checks the `template` object of a Graph API send (`name`, `language`, `components` with
    /// header and body `parameters` and buttons with `sub_type` and `index`) against this
    /// definition: the right number of header and body parameters (named: each name exactly
    /// once, by `parameter_name`), a header parameter of the header's kind, button parameters
    /// only for buttons that take one, with their `sub_type`. Err is Meta-style details naming
    /// the component, e.g. "body: expected 2 parameters, got 1" (Meta's 132000).
    pub fn check_send(&self, template: &Value) -> Result<(), String> {
        let sent = SentComponents::of(template)?;
        self.check_header(&sent.header)?;
        self.check_parameters("body", &self.body_parameters, &sent.body)?;
        for (kind, parameter) in &sent.body {
            if !matches!(kind.as_str(), "text" | "currency" | "date_time") {
                return Err(format!(
                    "body: a parameter of type {kind}: body parameters are text, currency or date_time"
                ));
            }
            payload_of("body", kind, parameter)?;
        }
        self.check_buttons(&sent.buttons)
    }

    fn check_header(&self, given: &[(String, &Value)]) -> Result<(), String> {
        match self.header {
            Some(HeaderFormat::Text) | None => {
                self.check_parameters("header", &self.header_parameters, given)?;
                if let Some((kind, parameter)) = given.first() {
                    if kind != "text" {
                        return Err(format!(
                            "header: expected a text parameter, got {kind} (the header is TEXT)"
                        ));
                    }
                    payload_of("header", kind, parameter)?;
                }
                Ok(())
            }
            Some(format) => {
                let expected = format.parameter_type();
                match given {
                    [(kind, parameter)] if kind == expected => {
                        let media = payload_of("header", kind, parameter)?;
                        let complete = if format == HeaderFormat::Location {
                            media.get("latitude").is_some() && media.get("longitude").is_some()
                        } else {
                            media.get("id").is_some() || media.get("link").is_some()
                        };
                        if complete {
                            Ok(())
                        } else if format == HeaderFormat::Location {
                            Err(
                                "header: the location parameter needs latitude and longitude"
                                    .to_owned(),
                            )
                        } else {
                            Err(format!(
                                "header: the {kind} parameter needs an id or a link"
                            ))
                        }
                    }
                    [(kind, _)] => Err(format!(
                        "header: expected a {expected} parameter, got {kind}"
                    )),
                    _ => Err(format!(
                        "header: expected 1 parameter ({expected}), got {}",
                        given.len()
                    )),
                }
            }
        }
    }

    /// The count, and for named templates the names, of one component's parameters.
    fn check_parameters(
        &self,
        component: &str,
        expected: &[String],
        given: &[(String, &Value)],
    ) -> Result<(), String> {
        if given.len() != expected.len() {
            return Err(format!(
                "{component}: expected {} parameter{}, got {}",
                expected.len(),
                if expected.len() == 1 { "" } else { "s" },
                given.len()
            ));
        }
        if self.parameter_format == ParameterFormat::Positional {
            return Ok(());
        }
        let mut seen: Vec<&str> = Vec::with_capacity(given.len());
        for (i, (_, parameter)) in given.iter().enumerate() {
            let name = parameter
                .get("parameter_name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    format!("{component}: parameter {i} has no parameter_name (the template's placeholders are named)")
                })?;
            if !expected.iter().any(|e| e == name) {
                return Err(format!(
                    "{component}: parameter_name {name:?} is not a placeholder of the template (it has {})",
                    expected.join(", ")
                ));
            }
            if seen.contains(&name) {
                return Err(format!(
                    "{component}: parameter_name {name:?} is given twice"
                ));
            }
            seen.push(name);
        }
        Ok(())
    }

    fn check_buttons(&self, given: &[(usize, String, &[Value])]) -> Result<(), String> {
        let mut seen = Vec::with_capacity(given.len());
        for (index, sub_type, parameters) in given {
            let spec = self.buttons.get(*index).ok_or_else(|| {
                format!(
                    "button {index}: the template has {} button{}",
                    self.buttons.len(),
                    if self.buttons.len() == 1 { "" } else { "s" }
                )
            })?;
            if seen.contains(index) {
                return Err(format!("button {index}: given twice"));
            }
            seen.push(*index);
            if *sub_type != spec.sub_type {
                return Err(format!(
                    "button {index}: sub_type {sub_type}, but the template's button {index} is {}",
                    spec.sub_type
                ));
            }
            let Some(expected) = spec.parameter_type() else {
                if parameters.is_empty() {
                    continue;
                }
                return Err(format!(
                    "button {index} ({sub_type}): takes no parameters, got {}",
                    parameters.len()
                ));
            };
            if parameters.len() > 1 || (spec.takes_parameter && parameters.is_empty()) {
                return Err(format!(
                    "button {index} ({sub_type}): expected 1 parameter, got {}",
                    parameters.len()
                ));
            }
            if let Some(parameter) = parameters.first() {
                let kind = parameter.get("type").and_then(Value::as_str).unwrap_or("");
                if !expected.is_empty() && kind != expected {
                    return Err(format!(
                        "button {index} ({sub_type}): expected a {expected} parameter, got {kind:?}"
                    ));
                }
            }
        }
        for (index, spec) in self.buttons.iter().enumerate() {
            if spec.takes_parameter && !seen.contains(&index) {
                return Err(format!(
                    "button {index} ({}): expected 1 parameter, got 0",
                    spec.sub_type
                ));
            }
        }
        Ok(())
    }
}

/// Fills `{{1}}` / `{{name}}` placeholders in `text` from `values` (placeholder name, value);
/// placeholders without a value are left as they are.
pub fn render(text: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = &after[..end];
                match values.iter().find(|(n, _)| *n == name) {
                    Some((_, value)) => out.push_str(value),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The placeholders of `text`, distinct, in order of first appearance.
fn placeholders(component: &str, text: &str) -> Result<Vec<String>, String> {
    let mut found: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("{component}: a {{{{ without its }}}}"))?;
        let name = &after[..end];
        let numbered =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) && !name.starts_with('0');
        let named = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !numbered && !named {
            return Err(format!(
                "{component}: {{{{{name}}}}} is not a placeholder: use {{{{1}}}} or a lower-case name like {{{{first_name}}}}"
            ));
        }
        if !found.iter().any(|f| f == name) {
            found.push(name.to_owned());
        }
        rest = &after[end + 2..];
    }
    Ok(found)
}

/// The template's format, from every placeholder of its header and body.
fn format_of(header: &[String], body: &[String]) -> Result<ParameterFormat, String> {
    let all = || header.iter().chain(body);
    let number = all().find(|p| p.starts_with(|c: char| c.is_ascii_digit()));
    let name = all().find(|p| !p.starts_with(|c: char| c.is_ascii_digit()));
    match (number, name) {
        (Some(number), Some(name)) => Err(format!(
            "placeholders mix numbers ({{{{{number}}}}}) and names ({{{{{name}}}}}): use one or the other"
        )),
        (None, Some(_)) => Ok(ParameterFormat::Named),
        _ => Ok(ParameterFormat::Positional),
    }
}

/// Positional placeholders sorted 1, 2, 3..., or an error naming the first gap.
fn positional(component: &str, names: Vec<String>) -> Result<Vec<String>, String> {
    let mut numbers: Vec<usize> = names.iter().filter_map(|n| n.parse().ok()).collect();
    numbers.sort_unstable();
    for (i, number) in numbers.iter().enumerate() {
        if *number != i + 1 {
            return Err(format!(
                "{component}: {{{{{}}}}} is missing (positional placeholders run 1, 2, 3... without gaps; found {{{{{number}}}}})",
                i + 1
            ));
        }
    }
    Ok(numbers.iter().map(usize::to_string).collect())
}

fn parse_header(component: &Value) -> Result<(HeaderFormat, Vec<String>), String> {
    let format = component
        .get("format")
        .and_then(Value::as_str)
        .ok_or("header: the HEADER component has no format")?;
    let format = HeaderFormat::parse(format).ok_or_else(|| {
        format!("header: format {format} is not TEXT, IMAGE, VIDEO, DOCUMENT or LOCATION")
    })?;
    if format != HeaderFormat::Text {
        return Ok((format, Vec::new()));
    }
    let text = component
        .get("text")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("header: a TEXT header has no text")?;
    let parameters = placeholders("header", text)?;
    if parameters.len() > 1 {
        return Err(format!(
            "header: a text header has at most 1 placeholder, this one has {}",
            parameters.len()
        ));
    }
    Ok((format, parameters))
}

fn parse_buttons(component: &Value) -> Result<Vec<ButtonSpec>, String> {
    let buttons = component
        .get("buttons")
        .and_then(Value::as_array)
        .filter(|b| !b.is_empty())
        .ok_or("buttons: the BUTTONS component has no buttons")?;
    buttons
        .iter()
        .enumerate()
        .map(|(i, button)| {
            let kind = button
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("buttons[{i}] has no type"))?
                .to_ascii_lowercase();
            let dynamic_url = button
                .get("url")
                .and_then(Value::as_str)
                .is_some_and(|url| url.contains("{{"));
            let (sub_type, takes_parameter) = match kind.as_str() {
                "url" => ("url".to_owned(), dynamic_url),
                "otp" => ("url".to_owned(), true),
                "copy_code" => (kind, true),
                _ => (kind, false),
            };
            let text = button.get("text").and_then(Value::as_str).unwrap_or("");
            Ok(ButtonSpec {
                sub_type,
                takes_parameter,
                text: text.to_owned(),
            })
        })
        .collect()
}

/// The components of a send, sorted by kind: header and body parameters with their `type`,
/// buttons with their index, sub_type and parameters.
struct SentComponents<'a> {
    header: Vec<(String, &'a Value)>,
    body: Vec<(String, &'a Value)>,
    buttons: Vec<(usize, String, &'a [Value])>,
}

impl<'a> SentComponents<'a> {
    fn of(template: &'a Value) -> Result<Self, String> {
        let components = match template.get("components") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(components)) => components.as_slice(),
            Some(_) => return Err("components must be an array".to_owned()),
        };
        let mut sent = Self {
            header: Vec::new(),
            body: Vec::new(),
            buttons: Vec::new(),
        };
        let (mut header, mut body) = (false, false);
        for (i, component) in components.iter().enumerate() {
            let kind = component
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("components[{i}] has no type"))?
                .to_ascii_lowercase();
            let parameters = match component.get("parameters") {
                None | Some(Value::Null) => &[][..],
                Some(Value::Array(parameters)) => parameters.as_slice(),
                Some(_) => return Err(format!("{kind}: parameters must be an array")),
            };
            match kind.as_str() {
                "header" | "body" => {
                    let (once, list) = if kind == "header" {
                        (&mut header, &mut sent.header)
                    } else {
                        (&mut body, &mut sent.body)
                    };
                    if std::mem::replace(once, true) {
                        return Err(format!("{kind}: given twice"));
                    }
                    for (j, parameter) in parameters.iter().enumerate() {
                        let kind_of = parameter
                            .get("type")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("{kind}: parameter {j} has no type"))?;
                        list.push((kind_of.to_owned(), parameter));
                    }
                }
                "button" => {
                    let index = match component.get("index") {
                        Some(Value::Number(n)) => n.as_u64(),
                        Some(Value::String(s)) => s.parse().ok(),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        format!("components[{i}]: a button needs its index (0, 1, ...)")
                    })?;
                    let sub_type = component
                        .get("sub_type")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("button {index}: no sub_type"))?
                        .to_ascii_lowercase();
                    let index = usize::try_from(index).unwrap_or(usize::MAX);
                    sent.buttons.push((index, sub_type, parameters));
                }
                other => {
                    return Err(format!(
                        "components[{i}]: type {other} is not header, body or button"
                    ));
                }
            }
        }
        Ok(sent)
    }
}

/// The object a parameter of type `kind` carries under that name (`{"type":"text","text":..}`).
fn payload_of<'a>(component: &str, kind: &str, parameter: &'a Value) -> Result<&'a Value, String> {
    match parameter.get(kind) {
        Some(value @ Value::String(text)) if kind == "text" && !text.is_empty() => Ok(value),
        Some(value @ Value::Object(_)) if kind != "text" => Ok(value),
        _ if kind == "text" => Err(format!("{component}: a text parameter has no text")),
        _ => Err(format!(
            "{component}: a {kind} parameter has no {kind} object"
        )),
    }
}

#[cfg(test)]
mod tests;

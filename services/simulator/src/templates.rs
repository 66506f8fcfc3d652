//! The message templates the simulated Meta knows, by name and language, each parsed once into
//! a [`TemplateSpec`]. A template send is answered the way Meta answers it: unknown name or
//! language, or a status Meta would not send (rejected, pending): 132001; paused: 132015;
//! disabled: 132016; parameters that do not fit: 132000. `GET /_sim/templates` lists them,
//! `PUT /_sim/templates` registers or replaces one.
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wamesh_whatsapp::template::{ParameterFormat, TemplateSpec};

use crate::SimState;
use crate::error::GraphError;

/// A template's review status at Meta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TemplateStatus {
    Approved,
    Paused,
    Disabled,
    Rejected,
    Pending,
}

/// What Meta charges a template as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TemplateCategory {
    Marketing,
    Utility,
    Authentication,
}

impl TemplateCategory {
    /// The name statuses' `pricing.category` uses.
    pub fn pricing_name(self) -> &'static str {
        match self {
            Self::Marketing => "marketing",
            Self::Utility => "utility",
            Self::Authentication => "authentication",
        }
    }
}

/// A template as registered: `{name, language, status, category, components}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDef {
    pub name: String,
    pub language: String,
    pub status: TemplateStatus,
    pub category: TemplateCategory,
    /// Meta's `components` array, as submitted to its message_templates API.
    pub components: Value,
}

/// A registered template with its definition parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub def: TemplateDef,
    pub spec: TemplateSpec,
}

impl Template {
    /// Parses the definition; the error names what is wrong with it.
    pub fn new(def: TemplateDef) -> Result<Self, String> {
        if def.name.is_empty()
            || def.name.len() > 512
            || !def
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!(
                "template name {:?} must be 1 to 512 lower-case letters, digits and underscores",
                def.name
            ));
        }
        if def.language.is_empty() || def.language.len() > 15 {
            return Err(format!(
                "template {}: language {:?} must be a language code like en_US",
                def.name, def.language
            ));
        }
        let spec = TemplateSpec::parse(&def.components)
            .map_err(|e| format!("template {} ({}): {e}", def.name, def.language))?;
        Ok(Self { def, spec })
    }

    /// Meta's own sample, known to every account: `hello_world`, en_US, approved, utility,
    /// body "Hello World", no parameters.
    pub fn hello_world() -> Self {
        let def = TemplateDef {
            name: "hello_world".to_owned(),
            language: "en_US".to_owned(),
            status: TemplateStatus::Approved,
            category: TemplateCategory::Utility,
            components: json!([{"type": "BODY", "text": "Hello World"}]),
        };
        let spec = TemplateSpec {
            parameter_format: ParameterFormat::Positional,
            header: None,
            header_parameters: Vec::new(),
            body_parameters: Vec::new(),
            body_text: "Hello World".to_owned(),
            buttons: Vec::new(),
        };
        Self { def, spec }
    }
}

/// Every template, by (name, language).
#[derive(Debug)]
pub struct Templates {
    by_key: RwLock<BTreeMap<(String, String), Arc<Template>>>,
}

impl Templates {
    /// `hello_world`, then `templates` (which may replace it).
    pub fn new(templates: Vec<Template>) -> Self {
        let registry = Self {
            by_key: RwLock::new(BTreeMap::new()),
        };
        registry.put(Template::hello_world());
        for template in templates {
            registry.put(template);
        }
        registry
    }

    /// Registers or replaces a template; answers whether it replaced one.
    pub fn put(&self, template: Template) -> bool {
        let key = (template.def.name.clone(), template.def.language.clone());
        self.by_key
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, Arc::new(template))
            .is_some()
    }

    pub fn list(&self) -> Vec<TemplateDef> {
        self.by_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|t| t.def.clone())
            .collect()
    }

    /// The template a send's `template` object names, if Meta would send it with these
    /// parameters; otherwise Meta's refusal.
    pub fn check(&self, template: &Value) -> Result<Arc<Template>, GraphError> {
        let name = template["name"].as_str().unwrap_or_default();
        let language = template["language"]["code"].as_str().unwrap_or_default();
        let found = self
            .by_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(name.to_owned(), language.to_owned()))
            .cloned();
        let Some(found) = found else {
            return Err(GraphError::template_missing(format!(
                "template name ({name}) does not exist in {language}"
            )));
        };
        match found.def.status {
            TemplateStatus::Approved => {}
            TemplateStatus::Paused => {
                return Err(GraphError::template_paused(format!(
                    "template {name} ({language}) is paused"
                )));
            }
            TemplateStatus::Disabled => {
                return Err(GraphError::template_disabled(format!(
                    "template {name} ({language}) is disabled"
                )));
            }
            TemplateStatus::Rejected | TemplateStatus::Pending => {
                return Err(GraphError::template_missing(format!(
                    "template name ({name}) does not exist in {language}: it is not approved"
                )));
            }
        }
        found
            .spec
            .check_send(template)
            .map_err(GraphError::template_parameters)?;
        Ok(found)
    }
}

/// `GET /_sim/templates`: `{"templates": [{name, language, status, category, components}]}`,
/// by name then language.
pub async fn list(State(state): State<SimState>) -> Json<Value> {
    Json(json!({ "templates": state.templates.list() }))
}

/// `PUT /_sim/templates`: registers or replaces `{name, language, status, category,
/// components}`; answers `{"template": .., "replaced": bool}`, or 400 naming the problem.
pub async fn put(State(state): State<SimState>, body: Bytes) -> Result<Json<Value>, GraphError> {
    let def: TemplateDef = serde_json::from_slice(&body)
        .map_err(|e| GraphError::invalid_parameter(format!("the template is not valid: {e}")))?;
    let template = Template::new(def).map_err(GraphError::invalid_parameter)?;
    let def = template.def.clone();
    let replaced = state.templates.put(template);
    tracing::info!(replaced, "simulator template registered");
    Ok(Json(json!({ "template": def, "replaced": replaced })))
}

//! `spec.templates` and `spec.extensions`: translation into the runtime's
//! sections, checked by the runtime's own validation.

use chat_runtime::extensions::ExtensionsConfig;
use chat_runtime::templates::{self, MAX_TENANT_TEMPLATES, Template};
use serde::Serialize;

use super::moderation::camel_case_path;
use super::{InvalidSpec, invalid, runtime_section};
use crate::crd::{ExtensionsSpec, TemplateSpec};

const TEMPLATES_FIELD: &str = "spec.templates";
const EXTENSIONS_FIELD: &str = "spec.extensions";

/// The runtime's `extensions` section. Fields the spec leaves out take the
/// runtime's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtensionsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_reply: Option<AutoReplySection>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AutoReplySection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offline_after_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u64>,
}

/// Checks `spec.templates` with the runtime's template validation and
/// returns the runtime's section for it.
pub fn validate_templates(specs: &[TemplateSpec]) -> Result<Vec<Template>, InvalidSpec> {
    if specs.len() > MAX_TENANT_TEMPLATES {
        return Err(invalid(
            TEMPLATES_FIELD,
            format!(
                "lists {} templates, but the runtime allows at most {MAX_TENANT_TEMPLATES}",
                specs.len()
            ),
        ));
    }
    let mut checked: Vec<Template> = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let field = format!("{TEMPLATES_FIELD}[{index}]");
        let template = Template {
            id: spec.id.clone(),
            title: spec.title.clone(),
            text: spec.text.clone(),
        };
        templates::validate(&template)
            .map_err(|(name, message)| invalid(format!("{field}.{name}"), message))?;
        if checked.iter().any(|earlier| earlier.id == template.id) {
            return Err(invalid(
                format!("{field}.id"),
                format!("duplicate template id {:?}", template.id),
            ));
        }
        checked.push(template);
    }
    Ok(checked)
}

/// Checks `spec.extensions` with the runtime's range checks and returns
/// the runtime's section for it.
pub fn validate_extensions(spec: &ExtensionsSpec) -> Result<ExtensionsSection, InvalidSpec> {
    let section = ExtensionsSection {
        auto_reply: spec.auto_reply.map(|auto_reply| AutoReplySection {
            offline_after_seconds: auto_reply.offline_after_seconds,
            period_seconds: auto_reply.period_seconds,
        }),
    };
    let config: ExtensionsConfig = runtime_section(&section, EXTENSIONS_FIELD)?;
    config.validate().map_err(|(name, message)| {
        invalid(
            format!("{EXTENSIONS_FIELD}.{}", camel_case_path(name)),
            message,
        )
    })?;
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates(yaml: &str) -> Result<Vec<Template>, InvalidSpec> {
        let specs: Vec<TemplateSpec> = serde_yaml::from_str(yaml).unwrap();
        validate_templates(&specs)
    }

    fn extensions(yaml: &str) -> Result<ExtensionsSection, InvalidSpec> {
        validate_extensions(&serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn templates_are_kept_in_order() {
        let checked = templates(
            "[{id: still-available, title: Còn hàng, text: 'Chào {{ten}}, {{mon_hang}} vẫn còn nhé.'}, {id: thanks, text: Cảm ơn bạn!}]",
        )
        .unwrap();
        assert_eq!(
            checked,
            [
                Template {
                    id: "still-available".to_owned(),
                    title: Some("Còn hàng".to_owned()),
                    text: "Chào {{ten}}, {{mon_hang}} vẫn còn nhé.".to_owned(),
                },
                Template {
                    id: "thanks".to_owned(),
                    title: None,
                    text: "Cảm ơn bạn!".to_owned(),
                },
            ]
        );
    }

    #[test]
    fn template_errors_name_their_field() {
        let ok = "{id: ok, text: hi}";
        let many = vec![ok; MAX_TENANT_TEMPLATES + 1].join(", ");
        let cases: Vec<(String, &str, &str)> = vec![
            (format!("[{many}]"), "spec.templates", "at most 200"),
            (
                format!("[{ok}, {{id: Bad, text: hi}}]"),
                "spec.templates[1].id",
                "lowercase",
            ),
            (
                format!("[{{id: t, title: '{}', text: hi}}]", "t".repeat(101)),
                "spec.templates[0].title",
                "1 to 100 characters",
            ),
            (
                "[{id: t, title: '   ', text: hi}]".into(),
                "spec.templates[0].title",
                "1 to 100 characters",
            ),
            (
                "[{id: t, text: '   '}]".into(),
                "spec.templates[0].text",
                "visible character",
            ),
            (
                "[{id: t, text: 'Hi {{name'}]".into(),
                "spec.templates[0].text",
                "not closed",
            ),
            (
                "[{id: t, text: 'Hi {{Name}}'}]".into(),
                "spec.templates[0].text",
                "lowercase",
            ),
            (
                format!("[{ok}, {ok}]"),
                "spec.templates[1].id",
                "duplicate template id",
            ),
        ];
        for (yaml, field, message) in cases {
            let error = templates(&yaml).unwrap_err();
            assert_eq!(error.field, field, "{yaml}: {}", error.message);
            assert!(
                error.message.contains(message),
                "{yaml}: {:?} does not contain {message:?}",
                error.message
            );
        }
    }

    #[test]
    fn extensions_are_translated() {
        let section =
            extensions("{autoReply: {offlineAfterSeconds: 0, periodSeconds: 3600}}").unwrap();
        let auto_reply = section.auto_reply.unwrap();
        assert_eq!(auto_reply.offline_after_seconds, Some(0));
        assert_eq!(auto_reply.period_seconds, Some(3600));

        let defaults = extensions("{autoReply: {}}").unwrap().auto_reply.unwrap();
        assert_eq!(defaults.offline_after_seconds, None);
        assert_eq!(defaults.period_seconds, None);
        assert_eq!(extensions("{}").unwrap().auto_reply, None);
    }

    #[test]
    fn extension_errors_name_their_field() {
        let cases = [
            (
                "{autoReply: {offlineAfterSeconds: 2592001}}",
                "spec.extensions.autoReply.offlineAfterSeconds",
            ),
            (
                "{autoReply: {periodSeconds: 0}}",
                "spec.extensions.autoReply.periodSeconds",
            ),
            (
                "{autoReply: {periodSeconds: 2592001}}",
                "spec.extensions.autoReply.periodSeconds",
            ),
        ];
        for (yaml, field) in cases {
            let error = extensions(yaml).unwrap_err();
            assert_eq!(error.field, field, "{yaml}: {}", error.message);
            assert!(
                error.message.contains("30 days"),
                "{yaml}: {}",
                error.message
            );
        }
    }
}

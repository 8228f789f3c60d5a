//! Templates in the send path, and the templates users keep for themselves.

use axum::http::StatusCode;
use serde::Serialize;

use crate::chat::{ChatError, now_millis};
use crate::store::Content;
use crate::templates::{self, MAX_USER_TEMPLATES, Template};
use crate::tenant::Tenant;

/// Prefix of a user's templates among the user's settings.
const SETTING_PREFIX: &str = "template:";

/// Renders a template message into its text, and rejects the kinds clients
/// may not send. Other content passes unchanged.
pub async fn prepare(
    tenant: &Tenant,
    sender: &str,
    content: Content,
) -> Result<Content, ChatError> {
    match content {
        Content::Automated { .. } => Err(ChatError::invalid(
            "automated messages are sent by extensions only",
        )),
        Content::Template {
            template_id,
            values,
            ..
        } => {
            templates::check_values(&template_id, &values)?;
            let Some(template) = find(tenant, sender, &template_id).await? else {
                return Err(ChatError::new(
                    StatusCode::BAD_REQUEST,
                    "unknown_template",
                    format!("no template {template_id:?} for this user or tenant"),
                ));
            };
            let max_bytes = tenant.settings().limits.max_message_bytes;
            let text = templates::render(&template.text, &values, max_bytes)?;
            Ok(Content::Template {
                template_id,
                values,
                text,
            })
        }
        other => Ok(other),
    }
}

/// Finds a template by id: the user's own first, then the tenant's, so a
/// user can adapt a tenant template under the same id.
async fn find(tenant: &Tenant, user: &str, id: &str) -> Result<Option<Template>, ChatError> {
    let key = format!("{SETTING_PREFIX}{id}");
    let own = tenant
        .store
        .user_settings(user, &key)
        .await?
        .into_iter()
        .find(|(stored_key, _)| *stored_key == key)
        .and_then(|(_, value)| serde_json::from_value::<Template>(value).ok());
    if own.is_some() {
        return Ok(own);
    }
    let settings = tenant.settings();
    Ok(settings
        .templates
        .iter()
        .find(|template| template.id == id)
        .cloned())
}

/// The templates a user can send.
#[derive(Debug, Serialize)]
pub struct Templates {
    /// The tenant's templates, in configuration order.
    pub tenant: Vec<Template>,
    /// The user's own, sorted by id.
    pub own: Vec<Template>,
}

pub async fn list(tenant: &Tenant, user: &str) -> Result<Templates, ChatError> {
    Ok(Templates {
        tenant: tenant.settings().templates.to_vec(),
        own: own_templates(tenant, user).await?,
    })
}

async fn own_templates(tenant: &Tenant, user: &str) -> Result<Vec<Template>, ChatError> {
    let stored = tenant.store.user_settings(user, SETTING_PREFIX).await?;
    Ok(stored
        .into_iter()
        .filter_map(|(_, value)| serde_json::from_value(value).ok())
        .collect())
}

/// Stores one of the user's own templates, replacing the one with the same
/// id. Returns whether it is new.
pub async fn save(tenant: &Tenant, user: &str, template: Template) -> Result<bool, ChatError> {
    if let Err((field, reason)) = templates::validate(&template) {
        return Err(ChatError::new(
            StatusCode::BAD_REQUEST,
            "invalid_template",
            format!("{field}: {reason}"),
        ));
    }

    let max_bytes = tenant.settings().limits.max_message_bytes;
    if template.text.len() > max_bytes {
        return Err(ChatError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
            format!("the template's text is over the message limit of {max_bytes} bytes"),
        ));
    }

    let own = own_templates(tenant, user).await?;
    let exists = own.iter().any(|stored| stored.id == template.id);
    // NOTE: the store has no conditional insert for settings, so two saves
    // racing past this count can leave a user a few templates over the
    // maximum.
    if !exists && own.len() >= MAX_USER_TEMPLATES {
        return Err(ChatError::new(
            StatusCode::CONFLICT,
            "too_many_templates",
            format!("a user may keep at most {MAX_USER_TEMPLATES} templates; delete one first"),
        ));
    }

    let key = format!("{SETTING_PREFIX}{}", template.id);
    let value = serde_json::to_value(&template).unwrap_or_default();
    tenant
        .store
        .put_user_setting(user, &key, Some(value), now_millis())
        .await?;
    Ok(!exists)
}

/// Deletes one of the user's own templates. Returns whether it existed.
pub async fn remove(tenant: &Tenant, user: &str, id: &str) -> Result<bool, ChatError> {
    templates::check_id(id).map_err(ChatError::invalid)?;
    let key = format!("{SETTING_PREFIX}{id}");
    Ok(tenant
        .store
        .put_user_setting(user, &key, None, now_millis())
        .await?)
}

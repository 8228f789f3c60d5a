//! The CQL role a ScyllaDB tenant's runtime logs in with, and its rotation.
//!
//! The annotation that rotates the API key, `parley.dev/rotate-credentials`,
//! rotates the role too. A password cannot change under running pods without
//! breaking their next login, so a rotation creates a second role with a
//! new password instead: `<keyspace>_runtime` and `<keyspace>_runtime_b`
//! take turns. The Secret `chat-runtime-scylla` then names the new role,
//! which changes the runtime's configuration and so rolls its pods. The old
//! role stays until the Deployment runs only pods of the new configuration,
//! and is dropped then. The Secret's annotations record the handled request
//! and the role still to drop, so a rotation survives operator restarts.

use std::collections::BTreeMap;

use crate::controller::rotation::HANDLED_ANNOTATION;

/// Annotation on the Secret: the role that pods of the previous
/// configuration may still use, dropped once none runs.
pub const PREVIOUS_ROLE_ANNOTATION: &str = "parley.dev/previous-role";

/// The role and password a Secret records, with its annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recorded {
    pub role: Option<String>,
    pub password: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// The login to apply, with the Secret annotations that record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub role: String,
    pub password: String,
    /// True when the role's password must be set: a new role, or a Secret
    /// that lost its password.
    pub password_is_new: bool,
    /// The role to drop once every pod runs with `role`.
    pub previous_role: Option<String>,
    /// True when this reconcile starts a rotation.
    pub rotating: bool,
    /// Annotations for the Secret.
    pub annotations: BTreeMap<String, String>,
}

/// Returns the role that takes turns with `role`, of the two a tenant with
/// base role `base` has.
fn other_role(base: &str, role: &str) -> String {
    if role == base {
        format!("{base}_b")
    } else {
        base.to_owned()
    }
}

/// Decides the tenant's login from what the Secret records and the
/// ChatTenant's rotation `request`. `base` is the tenant's first role name,
/// and `generate` makes a password when one is needed.
pub fn plan(
    base: &str,
    recorded: &Recorded,
    request: Option<&str>,
    generate: impl Fn() -> String,
) -> Login {
    let mut annotations: BTreeMap<String, String> = recorded
        .annotations
        .iter()
        .filter(|(key, _)| *key == HANDLED_ANNOTATION || *key == PREVIOUS_ROLE_ANNOTATION)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    // A role name the Secret records is trusted only if it is one of the
    // tenant's two, so an edited Secret cannot point the operator at
    // another role.
    let alternate = other_role(base, base);
    let role = recorded
        .role
        .clone()
        .filter(|role| role == base || *role == alternate);
    let previous_role = annotations.get(PREVIOUS_ROLE_ANNOTATION).cloned();

    let (Some(role), Some(password)) = (role, recorded.password.clone()) else {
        return Login {
            role: base.to_owned(),
            password: generate(),
            password_is_new: true,
            previous_role,
            rotating: false,
            annotations,
        };
    };
    let handled = annotations.get(HANDLED_ANNOTATION).map(String::as_str);
    let requested = request.filter(|request| Some(*request) != handled);
    // A rotation waits until the previous one dropped its old role, because
    // a tenant has only two roles to alternate between.
    match requested {
        Some(request) if previous_role.is_none() => {
            annotations.insert(HANDLED_ANNOTATION.to_owned(), request.to_owned());
            annotations.insert(PREVIOUS_ROLE_ANNOTATION.to_owned(), role.clone());
            Login {
                role: other_role(base, &role),
                password: generate(),
                password_is_new: true,
                previous_role: Some(role),
                rotating: true,
                annotations,
            }
        }
        _ => Login {
            role,
            password,
            password_is_new: false,
            previous_role,
            rotating: false,
            annotations,
        },
    }
}

impl Login {
    /// Forgets the previous role, once it is dropped.
    pub fn previous_dropped(&mut self) {
        self.previous_role = None;
        self.annotations.remove(PREVIOUS_ROLE_ANNOTATION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "parley_acme_runtime";

    fn password() -> String {
        String::from("fresh")
    }

    fn recorded(role: &str, annotations: &[(&str, &str)]) -> Recorded {
        Recorded {
            role: Some(role.to_owned()),
            password: Some(String::from("current")),
            annotations: annotations
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn first_login_uses_base_role() {
        let login = plan(BASE, &Recorded::default(), None, password);
        assert_eq!(login.role, BASE);
        assert_eq!(login.password, "fresh");
        assert!(login.password_is_new);
        assert_eq!(login.previous_role, None);
        assert!(!login.rotating);
    }

    #[test]
    fn steady_login_keeps_role_and_password() {
        let login = plan(BASE, &recorded(BASE, &[]), None, password);
        assert_eq!(login.role, BASE);
        assert_eq!(login.password, "current");
        assert!(!login.password_is_new);
        assert!(login.annotations.is_empty());
    }

    #[test]
    fn rotation_switches_role_and_keeps_old() {
        let login = plan(BASE, &recorded(BASE, &[]), Some("2026-12-05"), password);
        assert_eq!(login.role, "parley_acme_runtime_b");
        assert_eq!(login.password, "fresh");
        assert!(login.password_is_new);
        assert!(login.rotating);
        assert_eq!(login.previous_role.as_deref(), Some(BASE));
        assert_eq!(login.annotations[HANDLED_ANNOTATION], "2026-12-05");
        assert_eq!(login.annotations[PREVIOUS_ROLE_ANNOTATION], BASE);

        // The same request again is handled already.
        let again = plan(
            BASE,
            &Recorded {
                role: Some(login.role.clone()),
                password: Some(login.password.clone()),
                annotations: login.annotations.clone(),
            },
            Some("2026-12-05"),
            password,
        );
        assert!(!again.rotating);
        assert_eq!(again.role, "parley_acme_runtime_b");
        assert_eq!(again.previous_role.as_deref(), Some(BASE));
    }

    #[test]
    fn second_rotation_returns_to_base_role() {
        let handled = [(HANDLED_ANNOTATION, "first")];
        let login = plan(
            BASE,
            &recorded("parley_acme_runtime_b", &handled),
            Some("second"),
            password,
        );
        assert_eq!(login.role, BASE);
        assert_eq!(
            login.previous_role.as_deref(),
            Some("parley_acme_runtime_b")
        );
    }

    #[test]
    fn rotation_waits_for_previous_drop() {
        let pending = [
            (HANDLED_ANNOTATION, "first"),
            (PREVIOUS_ROLE_ANNOTATION, BASE),
        ];
        let login = plan(
            BASE,
            &recorded("parley_acme_runtime_b", &pending),
            Some("second"),
            password,
        );
        assert!(!login.rotating);
        assert_eq!(login.role, "parley_acme_runtime_b");
        assert_eq!(login.annotations[HANDLED_ANNOTATION], "first");

        let mut dropped = login;
        dropped.previous_dropped();
        assert_eq!(dropped.previous_role, None);
        assert!(!dropped.annotations.contains_key(PREVIOUS_ROLE_ANNOTATION));
    }

    #[test]
    fn foreign_role_in_secret_is_ignored() {
        let login = plan(BASE, &recorded("cassandra", &[]), None, password);
        assert_eq!(login.role, BASE);
        assert!(login.password_is_new);
    }
}

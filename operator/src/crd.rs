//! The `ChatTenant` custom resource (`parley.dev/v1alpha1`, cluster-scoped).
//!
//! Optional fields carry no schema defaults: GitOps tools compare what they
//! applied with what the server stores, and a default filled in by the
//! server would show as drift. The values in force are reported under
//! `status.effective` instead.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Group and version of the resource.
pub const GROUP: &str = "parley.dev";
pub const VERSION: &str = "v1alpha1";

/// A chat tenant: one isolated chat runtime with its own namespace,
/// credentials, storage and endpoint.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "parley.dev",
    version = "v1alpha1",
    kind = "ChatTenant",
    plural = "chattenants",
    singular = "chattenant",
    shortname = "ct",
    status = "ChatTenantStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".status.namespace"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ChatTenantSpec {
    /// Tenant id: a DNS label (lowercase letters, digits and '-', at most
    /// 40 characters). It names the tenant namespace (`parley-<tenantId>`),
    /// is the audience of the tenant's user tokens, and cannot change after
    /// creation.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
        length(min = 1, max = 40)
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "tenantId is immutable"}]))]
    pub tenant_id: String,

    /// Human-readable tenant name. Defaults to the tenant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub display_name: Option<String>,

    /// The chat runtime's workload and the limits it enforces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSpec>,

    /// Where chat history is stored. Defaults to the embedded store on a
    /// PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,

    /// Public endpoint of the tenant. When set, an Ingress routes `host` to
    /// the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointSpec>,

    /// Browser origins allowed to call the tenant's API and open WebSockets,
    /// such as `https://app.example.com`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allowed_origins: Vec<String>,

    /// Rules that check each message before it is stored: they may block
    /// it, mask parts of it or flag it for review. Without them messages
    /// are stored as sent. A pre-send hook of the tenant can check each
    /// message after the rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<ModerationSpec>,

    /// HTTP endpoints of the tenant that receive its event log, each event
    /// as one signed POST. The operator generates each endpoint's signing
    /// secret and keeps it in the Secret `chat-runtime-signing` of the
    /// tenant namespace, under the key `webhook.<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = chat_runtime::webhooks::MAX_ENDPOINTS))]
    pub webhooks: Vec<WebhookSpec>,

    /// Quick replies with `{{name}}` placeholders that every user of the
    /// tenant can send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = chat_runtime::templates::MAX_TENANT_TEMPLATES))]
    pub templates: Vec<TemplateSpec>,

    /// Features that react to the tenant's stored events, each off unless
    /// its section is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<ExtensionsSpec>,

    /// What happens to the tenant namespace and its data when this resource
    /// is deleted: `Retain` (the default) keeps them for a later ChatTenant
    /// with the same tenantId to adopt; `Delete` removes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// Fate of a tenant's namespace and data when its ChatTenant is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the namespace and its data, marked as retained.
    #[default]
    Retain,
    /// Delete the namespace and everything in it.
    Delete,
}

/// The runtime workload.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "!(has(self.replicas) && has(self.autoscaling))", "message": "set either runtime.replicas or runtime.autoscaling, not both"}]))]
pub struct RuntimeSpec {
    /// Number of runtime pods. The embedded store supports exactly one.
    /// With ScyllaDB storage, more than one runs only when Redis is
    /// configured, in `redis` or in the operator's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: Option<i32>,

    /// Container image of the runtime. Defaults to the image the operator
    /// was configured with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// CPU and memory requests and limits of the runtime container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Limits the runtime enforces for this tenant's users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TenantLimits>,

    /// Redis that relays live events between the runtime's replicas, for
    /// ScyllaDB storage. Defaults to the Redis the operator was configured
    /// with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,

    /// A HorizontalPodAutoscaler that sets the number of runtime pods from
    /// their CPU use, in place of `replicas`. Needs ScyllaDB storage and
    /// Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

/// Redis for the runtime's relay between replicas.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// `redis://host:port`, optionally with a database number, such as
    /// `redis://redis.parley-system:6379/0`. TLS (`rediss://`) is not
    /// supported, and a password belongs in `passwordSecret`, not here.
    #[schemars(length(min = 1, max = 512))]
    pub url: String,

    /// Key of a Secret in the operator's namespace that contains the
    /// Redis password. The operator copies it into the tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyReference>,
}

/// One data key of a Secret in the operator's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Data key of the password in the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Bounds and target of the runtime's HorizontalPodAutoscaler.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Minimum number of runtime pods (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: Option<i32>,

    /// Maximum number of runtime pods. Must be at least `minReplicas`.
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,

    /// Average CPU use the autoscaler keeps the pods at, in percent of
    /// their CPU request (default 80). The runtime container needs a CPU
    /// request for the autoscaler to work.
    #[serde(
        default,
        rename = "targetCPUUtilizationPercentage",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: Option<i32>,
}

/// Per-user limits, passed to the runtime's configuration. Each one left
/// out uses the runtime's default, reported in `status.effective`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantLimits {
    /// Largest text message, in bytes of UTF-8 (runtime default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub max_message_bytes: Option<u32>,

    /// Sustained messages per second per user (runtime default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub messages_per_second: Option<u32>,

    /// Maximum length of a text message, in user-visible characters, so
    /// that a letter with its tone marks or an emoji counts as one (runtime
    /// default 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub max_message_chars: Option<u32>,

    /// Largest burst of messages per user (runtime default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub message_burst: Option<u32>,

    /// Open WebSockets per user (runtime default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_sockets_per_user: Option<u32>,
}

/// A tenant's moderation rules and pre-send hook.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModerationSpec {
    /// Text that replaces each part of a message that a `Mask` rule
    /// matched: at most 32 bytes, no control characters (default `***`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub mask: Option<String>,

    /// Rules in the order they run. A rule that blocks stops the rest, and
    /// a rule that masks hands the masked text to the rules after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = chat_runtime::moderation::MAX_RULES))]
    pub rules: Vec<ModerationRule>,

    /// An HTTP endpoint of the tenant that receives each message the rules
    /// let through, and allows, rejects or rewrites it before it is stored.
    /// Each call is signed with a secret that the operator generates and
    /// keeps in the Secret `chat-runtime-signing` of the tenant namespace,
    /// under the key `hook`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<ModerationHook>,
}

/// The pre-send hook.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModerationHook {
    /// `http` or `https` URL that receives each message as a POST, without
    /// credentials or fragment.
    #[schemars(length(min = 1))]
    pub url: String,

    /// Deadline of one call, connecting included, in milliseconds: 10 to
    /// 10000 (runtime default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 10000))]
    pub timeout_ms: Option<u64>,

    /// Handling of a message when the hook gives no decision in time:
    /// `Open` stores it as the rules left it, and `Closed` rejects it.
    pub on_failure: HookFailureAction,
}

/// The handling of a message that the hook could not decide on.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum HookFailureAction {
    /// Store the message as the rules left it.
    Open,
    /// Reject the message, and return `503 moderation_unavailable` to the
    /// sender.
    Closed,
}

/// One endpoint that receives the tenant's event log.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// Name used in metrics, logs, the dead-letter API and the key of the
    /// signing secret, unique among the webhooks: 1 to 63 lowercase
    /// letters, digits, '-' or '_'.
    #[schemars(regex(pattern = r"^[a-z0-9_-]{1,63}$"))]
    pub name: String,

    /// `http` or `https` URL that receives each event as a POST.
    #[schemars(length(min = 1))]
    pub url: String,

    /// Event types to send, such as `message.new`, or prefixes such as
    /// `message.*`. Every type when left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,

    /// Attempts per event before it goes to the dead-letter list: 1 to 50
    /// (runtime default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub max_attempts: Option<u32>,

    /// Wait before the second attempt, in milliseconds, doubled for each
    /// later attempt up to a minute: 10 to 600000 (runtime default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 600000))]
    pub retry_initial_ms: Option<u64>,

    /// Time allowed for one attempt, in milliseconds: 100 to 8000 (runtime
    /// default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 8000))]
    pub timeout_ms: Option<u64>,
}

/// A quick reply of the tenant.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSpec {
    /// Id that clients send as `template_id`, unique among the templates:
    /// 1 to 64 lowercase letters, digits, '-', '_' or '.'.
    #[schemars(regex(pattern = r"^[a-z0-9._-]{1,64}$"))]
    pub id: String,

    /// Short label for a picker, such as `Still available`: at most 100
    /// characters, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub title: Option<String>,

    /// Text with at most 20 different `{{name}}` placeholders, each named
    /// with lowercase letters, digits or '_'. It must contain a visible
    /// character and no control characters other than tab and line breaks.
    #[schemars(length(min = 1))]
    pub text: String,
}

/// The tenant's extensions.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionsSpec {
    /// Away messages: when someone writes to a user in a direct channel and
    /// the user has been offline long enough, the user's away message is
    /// sent on their behalf. `autoReply: {}` turns it on with the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_reply: Option<AutoReplySpec>,
}

/// Settings of away messages.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoReplySpec {
    /// Seconds a user must have been offline before their away message is
    /// sent: 0 to 2592000, which is 30 days (runtime default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2592000))]
    pub offline_after_seconds: Option<u64>,

    /// Seconds during which a channel gets at most one away message: 1 to
    /// 2592000 (runtime default 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2592000))]
    pub period_seconds: Option<u64>,
}

/// One rule: a name, what it does on a match, and exactly one check of
/// `terms`, `regex`, `links` or `contacts`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "[has(self.terms), has(self.regex), has(self.links), has(self.contacts)].filter(x, x).size() == 1", "message": "set exactly one of terms, regex, links or contacts"}]))]
pub struct ModerationRule {
    /// Name used in metrics and logs, unique among the rules: 1 to 63
    /// lowercase letters, digits, '-' or '_'.
    #[schemars(regex(pattern = r"^[a-z0-9_-]{1,63}$"))]
    pub name: String,

    /// Action taken on a message that the rule matches.
    pub action: ModerationAction,

    /// When true the rule only records what it would do, so a new rule can
    /// be tried on real traffic first (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<bool>,

    /// Words or phrases to find.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<TermsCheck>,

    /// A regular expression in the syntax of Rust's `regex` crate, matched
    /// without regard to case against the text after Unicode
    /// normalisation and removal of invisible characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = crate::validate::MAX_REGEX_CHARS))]
    pub regex: Option<String>,

    /// Links by their domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<LinksCheck>,

    /// Phone numbers, e-mail addresses and messaging handles, also when
    /// spelled out or split up to get past a plain pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<ContactsCheck>,
}

/// The action of a moderation rule.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ModerationAction {
    /// Reject the message, and return an error with a reason code to the
    /// sender.
    Block,
    /// Replace each matched part with the mask text, then store the message.
    Mask,
    /// Store and deliver the message, and record the match for review.
    Flag,
}

/// Words or phrases, matched as whole words.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TermsCheck {
    /// The terms, each at most 256 bytes. A trailing `*` matches any word
    /// that starts with the term.
    #[schemars(
        length(min = 1, max = chat_runtime::moderation::MAX_TERMS),
        inner(length(min = 1, max = chat_runtime::moderation::MAX_TERM_BYTES))
    )]
    pub list: Vec<String>,

    /// When true, tone marks and other accents are ignored, so `lừa đảo`
    /// also matches `lua dao` (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accent_insensitive: Option<bool>,
}

/// Links to match, by domain. Each domain covers its subdomains.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "has(self.allowedDomains) || (has(self.blockedDomains) && size(self.blockedDomains) > 0)", "message": "set allowedDomains, blockedDomains or both"}]))]
pub struct LinksCheck {
    /// When set, links to any other domain match, so an empty list makes
    /// every link match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = chat_runtime::moderation::MAX_DOMAINS),
        inner(length(min = 1, max = 253))
    )]
    pub allowed_domains: Option<Vec<String>>,

    /// Links to these domains match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = chat_runtime::moderation::MAX_DOMAINS),
        inner(length(min = 1, max = 253))
    )]
    pub blocked_domains: Vec<String>,
}

/// Contact details to find.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactsCheck {
    /// Kinds of contact details to find (default all three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub kinds: Option<Vec<ContactKindSpec>>,

    /// Minimum digits of a phone number, 7 to 15 (default 9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 7, max = 15))]
    pub min_phone_digits: Option<u32>,
}

/// A kind of contact detail.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ContactKindSpec {
    /// Phone numbers, also written with spaces, dots or number words.
    Phone,
    /// E-mail addresses, also with `(at)` or ` at ` for `@`.
    Email,
    /// Links to messaging apps and handles such as `zalo: name`.
    Handle,
}

/// Storage of chat history: `embedded` or `scylla`, not both.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "!(has(self.embedded) && has(self.scylla))", "message": "set either storage.embedded or storage.scylla, not both"}]))]
pub struct StorageSpec {
    /// The embedded store: one SQLite file on a PersistentVolumeClaim, for
    /// a single runtime pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedStorage>,

    /// A keyspace of its own in the ScyllaDB cluster the operator is
    /// configured with. The operator creates the keyspace, a CQL role for
    /// the tenant and the tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scylla: Option<ScyllaStorage>,
}

/// Settings of a tenant's ScyllaDB keyspace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScyllaStorage {
    /// Copies of each row per datacenter, such as `{"dc1": 3}`. A change is
    /// applied with `ALTER KEYSPACE`; run a repair afterwards so that the
    /// new replicas receive the existing rows.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 16))]
    pub replication: BTreeMap<String, u32>,

    /// Keyspace name: 1 to 48 lowercase letters, digits or '_', starting
    /// with a letter. Defaults to `parley_` followed by the tenant id with
    /// '-' replaced by '_'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]{0,47}$"))]
    pub keyspace: Option<String>,

    /// Fate of the keyspace and the tenant's CQL roles when this resource is
    /// deleted. `Retain` (the default) keeps both for a later ChatTenant
    /// with the same tenantId, and `Delete` drops them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// Settings of the embedded store's volume.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedStorage {
    /// Size of the PersistentVolumeClaim, such as `10Gi` (default `1Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub size: Option<String>,

    /// StorageClass of the claim; the cluster's default class when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// The tenant's public endpoint.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSpec {
    /// Host name the Ingress serves, such as `chat.acme.example`.
    #[schemars(
        regex(
            pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
        ),
        length(min = 1, max = 253)
    )]
    pub host: String,

    /// IngressClass of the Ingress; the cluster's default class when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub ingress_class_name: Option<String>,

    /// Secret in the tenant namespace holding the TLS certificate for
    /// `host`. Without it the Ingress serves plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_secret_name: Option<String>,
}

/// Observed state, written by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatTenantStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, one condition per component (`NamespaceReady`,
    /// `CredentialsReady`, `KeyspaceReady` for ScyllaDB storage,
    /// `RuntimeReady`, `EndpointReady`), and `Reconciling` or `Stalled`
    /// while they apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// Base URL of the tenant's API: the Ingress host when one is set,
    /// otherwise the in-cluster Service address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// Secret in the tenant namespace with the API key id and secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,

    /// Values in force, including defaults the spec left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<EffectiveSettings>,

    /// The ScyllaDB keyspace the operator provisioned for this tenant. Set
    /// once provisioning succeeded and kept, because the tenant's chat
    /// history stays there: the storage cannot change afterwards, and
    /// deletion drops this keyspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyspace: Option<String>,
}

/// Settings in force after defaults.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSettings {
    pub deletion_policy: DeletionPolicy,
    /// Runtime pods that run, or with autoscaling the fewest that run. It
    /// can be lower than `spec.runtime.replicas`, and the `RuntimeReady`
    /// condition then gives the reason.
    pub replicas: i32,
    pub image: String,
    pub storage_size: String,
    pub max_message_bytes: u32,
    /// Maximum length of a text message, in user-visible characters.
    /// Missing from a status written by an operator release older than
    /// this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_chars: Option<u32>,
    pub messages_per_second: u32,
    pub message_burst: u32,
    pub max_sockets_per_user: u32,
    /// The ScyllaDB keyspace, for ScyllaDB storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyspace: Option<String>,
    /// URL of the Redis that relays events between replicas, when one is
    /// configured for a tenant with ScyllaDB storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_without_max_message_chars_is_readable() {
        // Written by a release that did not report the limit yet. Failing
        // to read it would stop the operator from reconciling the tenant.
        let status: ChatTenantStatus = serde_json::from_value(serde_json::json!({
            "effective": {
                "deletionPolicy": "Retain",
                "replicas": 1,
                "image": "ghcr.io/parley-dev/chat-runtime:0.1.0",
                "storageSize": "1Gi",
                "maxMessageBytes": 4096,
                "messagesPerSecond": 10,
                "messageBurst": 20,
                "maxSocketsPerUser": 10
            }
        }))
        .unwrap();
        let effective = status.effective.unwrap();
        assert_eq!(effective.max_message_chars, None);
        assert_eq!(effective.max_message_bytes, 4096);
    }
}

//! Prometheus metrics, all labelled by tenant.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::relay::RelayMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub tenant: String,
    pub code: String,
}

/// Labels of a moderation rule's decisions. `decision` is `pass`, `block`,
/// `mask` or `flag`; `shadow` is `true` for a rule that only records.
///
/// The pre-send hook counts under the rule `hook`, with `shadow` always
/// `false`. Its `decision` is `allow`, `reject`, `rewrite`,
/// `rewrite_invalid`, `failed_open` or `failed_closed`. `rewrite_invalid`
/// is a rewrite that broke the tenant's limits or changed an edit's kind,
/// so the message was rejected. The two failures are calls without a
/// decision, after which the message was stored unchanged (`open`) or
/// rejected (`closed`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub tenant: String,
    pub rule: String,
    pub decision: &'static str,
    pub shadow: bool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub tenant: String,
    pub rule: String,
}

/// Labels of webhook attempts. `outcome` is `delivered`, `failed` (one
/// failed attempt) or `dead_lettered`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub tenant: String,
    pub endpoint: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExtensionLabels {
    pub tenant: String,
    pub extension: &'static str,
    /// `handled` or `failed`.
    pub outcome: &'static str,
}

type LatencyFamily = Family<TenantLabel, Histogram, fn() -> Histogram>;
type RuleLatencyFamily = Family<RuleLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub connections: Family<TenantLabel, Gauge>,
    /// Read operations started on the tenant's store since it opened. Set
    /// from the store when `/metrics` is read; a gauge because a reloaded
    /// tenant starts again from zero.
    pub store_reads: Family<TenantLabel, Gauge>,
    pub messages_stored: Family<TenantLabel, Counter>,
    pub deliveries: Family<TenantLabel, Counter>,
    pub delivery_seconds: LatencyFamily,
    pub errors: Family<ErrorLabels, Counter>,
    pub moderation_decisions: Family<DecisionLabels, Counter>,
    pub moderation_seconds: RuleLatencyFamily,
    pub webhook_deliveries: Family<WebhookLabels, Counter>,
    pub extension_events: Family<ExtensionLabels, Counter>,
    pub relay: RelayMetrics,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 4 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

fn rule_histogram() -> Histogram {
    // 1 µs to about 17 s: rules take microseconds, and the hook, which
    // shares the histogram, may take up to its 10 s timeout.
    Histogram::new(exponential_buckets(0.000_001, 4.0, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("parley");
        let connections = Family::<TenantLabel, Gauge>::default();
        let store_reads = Family::<TenantLabel, Gauge>::default();
        let messages_stored = Family::<TenantLabel, Counter>::default();
        let deliveries = Family::<TenantLabel, Counter>::default();
        let delivery_seconds: LatencyFamily = Family::new_with_constructor(latency_histogram);
        let errors = Family::<ErrorLabels, Counter>::default();
        let moderation_decisions = Family::<DecisionLabels, Counter>::default();
        let webhook_deliveries = Family::<WebhookLabels, Counter>::default();
        let extension_events = Family::<ExtensionLabels, Counter>::default();
        let moderation_seconds: RuleLatencyFamily = Family::new_with_constructor(rule_histogram);

        registry.register(
            "websocket_connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        registry.register(
            "messages_stored",
            "Messages stored (duplicates not counted)",
            messages_stored.clone(),
        );
        registry.register(
            "deliveries",
            "Message frames written to recipient sockets",
            deliveries.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from a message being stored to its frame being written to a recipient socket",
            delivery_seconds.clone(),
        );
        registry.register(
            "store_reads",
            "Read operations started on the tenant's store since it opened",
            store_reads.clone(),
        );
        registry.register(
            "errors",
            "Errors returned to clients, by code",
            errors.clone(),
        );

        registry.register(
            "moderation_decisions",
            "Decisions of moderation rules, one per rule per message checked",
            moderation_decisions.clone(),
        );
        registry.register(
            "moderation_rule_duration_seconds",
            "Time a moderation rule, or the pre-send hook, took to check one message",
            moderation_seconds.clone(),
        );

        registry.register(
            "webhook_deliveries",
            "Webhook requests by outcome, and events put on a dead-letter list",
            webhook_deliveries.clone(),
        );
        registry.register(
            "extension_events",
            "Events handed to extensions, by outcome",
            extension_events.clone(),
        );

        let relay = register_relay(&mut registry);
        Self {
            registry,
            relay,
            connections,
            store_reads,
            messages_stored,
            deliveries,
            delivery_seconds,
            errors,
            moderation_decisions,
            moderation_seconds,
            webhook_deliveries,
            extension_events,
        }
    }
}

/// Registers the process-wide metrics of the Redis relay, which carry no
/// tenant label.
fn register_relay(registry: &mut Registry) -> RelayMetrics {
    let relay = RelayMetrics {
        published: Counter::default(),
        received: Counter::default(),
        rejected: Counter::default(),
        dropped: Counter::default(),
        resyncs: Counter::default(),
        subscription_losses: Counter::default(),
        publisher_connected: Gauge::default(),
        subscriber_connected: Gauge::default(),
    };
    registry.register(
        "relay_published",
        "Events published to Redis for the other replicas",
        relay.published.clone(),
    );
    registry.register(
        "relay_received",
        "Events received from Redis, this replica's own included",
        relay.received.clone(),
    );
    registry.register(
        "relay_rejected",
        "Events received from Redis and ignored: tagged with no key of their tenant, or malformed",
        relay.rejected.clone(),
    );
    registry.register(
        "relay_dropped",
        "Events not published because Redis was unreachable or slow; each leads to a resync",
        relay.dropped.clone(),
    );
    registry.register(
        "relay_resyncs",
        "Resyncs handed to this replica's sockets: one after every subscription to Redis, the first included, and one per resync announced by another replica",
        relay.resyncs.clone(),
    );
    registry.register(
        "relay_subscription_losses",
        "Times the Redis subscription closed or stopped answering",
        relay.subscription_losses.clone(),
    );
    registry.register(
        "relay_publisher_connected",
        "1 while the publishing connection to Redis is up",
        relay.publisher_connected.clone(),
    );
    registry.register(
        "relay_subscriber_connected",
        "1 while the subscription to Redis is up",
        relay.subscriber_connected.clone(),
    );
    relay
}

impl Metrics {
    pub fn error(&self, tenant: &str, code: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                tenant: tenant.to_owned(),
                code: code.to_owned(),
            })
            .inc();
    }

    pub fn tenant(tenant: &str) -> TenantLabel {
        TenantLabel {
            tenant: tenant.to_owned(),
        }
    }

    /// Renders the registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

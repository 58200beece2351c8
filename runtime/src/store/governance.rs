//! The governance rows the store keeps: tenants with their limits and rate plan, API keys (only
//! their SHA-256 is stored), ordered access rules, per-operation billing rates, and the usage
//! ledger's read side. What they mean, and how the daemon enforces them, is
//! [`crate::governance`]'s.

use hartonomous_loader::Hash256;
use serde::Serialize;

/// The rate plan a tenant gets when none is named; the schema seeds its rates.
pub const DEFAULT_PLAN: &str = "standard";

/// A tenant, created by its first key or rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantSettings {
    pub name: String,
    pub plan: String,
    /// Requests a minute (token bucket of this size, refilled continuously); `None` = no limit.
    pub requests_per_minute: Option<u64>,
    /// Input plus output tokens a minute; `None` = no limit.
    pub tokens_per_minute: Option<u64>,
}

/// A key as `hartonomous keys create` makes it: the secret itself is never stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApiKey {
    /// A short public id (the secret's first characters), for listing and revoking.
    pub key_id: String,
    pub tenant: String,
    pub label: String,
    /// SHA-256 of the whole bearer token.
    pub key_hash: Hash256,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKeyRow {
    pub key_id: String,
    pub tenant: String,
    pub label: String,
    #[serde(skip)]
    pub key_hash: Hash256,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// Whether a matching rule lets a request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleEffect {
    Allow,
    Deny,
}

impl RuleEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleEffect::Allow => "allow",
            RuleEffect::Deny => "deny",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "allow" => Some(RuleEffect::Allow),
            "deny" => Some(RuleEffect::Deny),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAccessRule {
    pub tenant: String,
    pub effect: RuleEffect,
    /// An operation name (`embed`, `generate`, ...) or `*`.
    pub operation: String,
    /// A glob over `NAME:VERSION` (`*` any run, `?` one character).
    pub model_pattern: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessRule {
    pub rule_id: i64,
    pub tenant: String,
    /// Order within the tenant's rules (ascending): new rules go last.
    pub position: i64,
    pub effect: RuleEffect,
    pub operation: String,
    pub model_pattern: String,
}

/// Billing units an operation costs under a plan: a fixed part per request, and parts per
/// thousand input tokens, per thousand output tokens and per vector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationRate {
    pub plan: String,
    pub operation: String,
    pub per_request: f64,
    pub per_1k_input_tokens: f64,
    pub per_1k_output_tokens: f64,
    pub per_vector: f64,
}

/// Everything the daemon enforces, read in one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GovernanceRows {
    pub tenants: Vec<TenantSettings>,
    /// Revoked keys included (a store with only revoked keys still requires a key).
    pub keys: Vec<ApiKeyRow>,
    /// By tenant, then position.
    pub rules: Vec<AccessRule>,
    pub rates: Vec<OperationRate>,
}

/// Which ledger rows to read: newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageQuery {
    pub tenant: Option<String>,
    /// Rows recorded at or after this UTC time (ISO 8601, as the ledger stores it).
    pub since: Option<String>,
    pub limit: usize,
}

/// One usage ledger row as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    pub usage_id: i64,
    pub tenant: String,
    /// The request's key (its `request_id` in responses and lineage), where it was recorded.
    pub request_id: Option<String>,
    pub operation: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub vectors: u64,
    pub duration_ms: f64,
    pub billing_units: f64,
    pub status: u16,
    pub recorded_at: String,
}

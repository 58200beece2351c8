//! `hartonomous keys ...` and `hartonomous policy ...`: API keys, access rules, tenants' limits
//! and plans' rates, written to the store the daemon reads them from (a running daemon picks
//! changes up within `--governance-refresh`).

use anyhow::{bail, Context as _};
use clap::Subcommand;
use hartonomous_runtime::governance::{check_rule, new_key, Operation};
use hartonomous_runtime::store::{
    NewAccessRule, NewApiKey, OperationRate, RuleEffect, Store, TenantSettings, DEFAULT_PLAN,
};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key for a tenant (created if new). The key is printed once; only its SHA-256 is
    /// stored. Once any key exists, every route but /health requires one.
    Create {
        #[arg(long)]
        tenant: String,
        /// A note for `keys list` (who or what uses it).
        #[arg(long, default_value = "")]
        label: String,
        /// Print the key and its id as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (ids, tenants, labels, when created and revoked; never the secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (as `keys list` shows it).
    Revoke { key_id: String },
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Append a rule that allows OPERATION on models matching MODEL (a glob) to a tenant.
    Allow(RuleArgs),
    /// Append a rule that denies it; a deny wins over any allow that matches the same request.
    Deny(RuleArgs),
    /// List the rules, tenants (plans, limits) and rates.
    List {
        /// Only this tenant's rules.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a rule by its id.
    Remove { rule_id: i64 },
    /// Set a tenant's rate plan and limits (a limit left out is removed).
    Limits {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = DEFAULT_PLAN)]
        plan: String,
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        requests_per_minute: Option<u64>,
        /// Input plus output tokens a minute.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        tokens_per_minute: Option<u64>,
    },
    /// Set what an operation costs under a plan, in billing units.
    Rate {
        #[arg(long, default_value = DEFAULT_PLAN)]
        plan: String,
        #[arg(long)]
        operation: String,
        #[arg(long, default_value_t = 0.0)]
        per_request: f64,
        #[arg(long = "per-1k-input-tokens", default_value_t = 0.0)]
        per_1k_input_tokens: f64,
        #[arg(long = "per-1k-output-tokens", default_value_t = 0.0)]
        per_1k_output_tokens: f64,
        #[arg(long, default_value_t = 0.0)]
        per_vector: f64,
    },
}

#[derive(clap::Args)]
pub struct RuleArgs {
    #[arg(long)]
    tenant: String,
    /// embed, generate, ensemble, search, aggregate, models, lineage, usage, metrics, or *.
    #[arg(long)]
    operation: String,
    /// A glob over NAME:VERSION or NAME (`*` any run, `?` one character); quote it in a shell.
    #[arg(long)]
    model: String,
}

fn check_tenant(tenant: &str) -> anyhow::Result<()> {
    if tenant.trim().is_empty() || tenant.len() > 128 || tenant.chars().any(char::is_control) {
        bail!("tenant {tenant:?}: give a name of 1 to 128 printable characters");
    }
    Ok(())
}

pub async fn keys(store: &dyn Store, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { tenant, label, json } => {
            check_tenant(&tenant)?;
            let (token, key_id, key_hash) = new_key();
            store.add_api_key(&NewApiKey { key_id: key_id.clone(), tenant: tenant.clone(), label, key_hash }).await?;
            if json {
                println!("{}", serde_json::json!({"key": token, "key_id": key_id, "tenant": tenant}));
            } else {
                println!("created key {key_id} for tenant {tenant}; it is shown only now:");
                println!("{token}");
                let rules = store.governance().await?.rules.into_iter().filter(|r| r.tenant == tenant).count();
                if rules == 0 {
                    println!(
                        "tenant {tenant} has no access rules yet, so the key is refused everything but /health: e.g. `hartonomous policy allow --tenant {tenant} --operation '*' --model '*'`"
                    );
                }
            }
        }
        KeysCommand::List { json } => {
            let keys = store.governance().await?.keys;
            if json {
                println!("{}", serde_json::to_string(&keys)?);
            } else if keys.is_empty() {
                println!("no keys: the daemon serves without authentication (create one with `hartonomous keys create --tenant NAME`)");
            } else {
                println!("{:<12} {:<20} {:<26} {:<26} label", "key id", "tenant", "created", "revoked");
                for k in keys {
                    println!("{:<12} {:<20} {:<26} {:<26} {}", k.key_id, k.tenant, k.created_at, k.revoked_at.as_deref().unwrap_or("-"), k.label);
                }
            }
        }
        KeysCommand::Revoke { key_id } => {
            if !store.revoke_api_key(&key_id).await? {
                bail!("no unrevoked key has the id {key_id:?} (see `hartonomous keys list`)");
            }
            println!("revoked key {key_id}; a running daemon refuses it within its --governance-refresh");
        }
    }
    Ok(())
}

pub async fn policy(store: &dyn Store, command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Allow(args) => add_rule(store, RuleEffect::Allow, args).await?,
        PolicyCommand::Deny(args) => add_rule(store, RuleEffect::Deny, args).await?,
        PolicyCommand::Remove { rule_id } => {
            if !store.remove_access_rule(rule_id).await? {
                bail!("there is no rule {rule_id} (see `hartonomous policy list`)");
            }
            println!("removed rule {rule_id}");
        }
        PolicyCommand::List { tenant, json } => {
            let rows = store.governance().await?;
            let rules: Vec<_> = rows.rules.iter().filter(|r| tenant.as_ref().is_none_or(|t| *t == r.tenant)).collect();
            if json {
                println!("{}", serde_json::json!({"rules": rules, "tenants": rows.tenants, "rates": rows.rates}));
                return Ok(());
            }
            println!("rules (deny wins over allow; nothing is allowed without an allow rule):");
            for r in &rules {
                println!("  {:>4}  {:<16} #{:<3} {:<5} {:<10} {}", r.rule_id, r.tenant, r.position, r.effect.as_str(), r.operation, r.model_pattern);
            }
            println!("tenants:");
            for t in &rows.tenants {
                let limit = |v: Option<u64>| v.map_or("unlimited".to_string(), |n| n.to_string());
                println!(
                    "  {:<16} plan {:<10} requests/min {:<10} tokens/min {}",
                    t.name,
                    t.plan,
                    limit(t.requests_per_minute),
                    limit(t.tokens_per_minute)
                );
            }
            println!("rates (billing units):");
            for r in &rows.rates {
                println!(
                    "  {:<10} {:<10} per request {:<8} per 1k input tokens {:<8} per 1k output tokens {:<8} per vector {}",
                    r.plan, r.operation, r.per_request, r.per_1k_input_tokens, r.per_1k_output_tokens, r.per_vector
                );
            }
        }
        PolicyCommand::Limits { tenant, plan, requests_per_minute, tokens_per_minute } => {
            check_tenant(&tenant)?;
            store.put_tenant(&TenantSettings { name: tenant.clone(), plan, requests_per_minute, tokens_per_minute }).await?;
            println!("tenant {tenant} updated");
        }
        PolicyCommand::Rate { plan, operation, per_request, per_1k_input_tokens, per_1k_output_tokens, per_vector } => {
            if Operation::parse(&operation).is_none() {
                bail!("operation {operation:?} is not one of {}", Operation::names().trim_end_matches(", *"));
            }
            for (name, v) in [
                ("--per-request", per_request),
                ("--per-1k-input-tokens", per_1k_input_tokens),
                ("--per-1k-output-tokens", per_1k_output_tokens),
                ("--per-vector", per_vector),
            ] {
                if !v.is_finite() || v < 0.0 {
                    bail!("{name} is {v}; rates are finite and not negative");
                }
            }
            store
                .put_rate(&OperationRate { plan: plan.clone(), operation: operation.clone(), per_request, per_1k_input_tokens, per_1k_output_tokens, per_vector })
                .await?;
            println!("rate of {operation} under plan {plan} set");
        }
    }
    Ok(())
}

async fn add_rule(store: &dyn Store, effect: RuleEffect, args: RuleArgs) -> anyhow::Result<()> {
    check_tenant(&args.tenant)?;
    check_rule(&args.operation, &args.model).map_err(anyhow::Error::msg).context("the rule was not stored")?;
    let id = store
        .add_access_rule(&NewAccessRule { tenant: args.tenant.clone(), effect, operation: args.operation.clone(), model_pattern: args.model.clone() })
        .await?;
    println!("rule {id}: {} {} {} for tenant {}", effect.as_str(), args.operation, args.model, args.tenant);
    Ok(())
}

//! The prompt to a token budget. Tokens are counted by the server when it
//! offers llama.cpp's `/tokenize`, else estimated on the high side; the budget
//! (`model.max_prompt_tokens`) defaults to what the server's context holds
//! (llama.cpp's `/props`) less the reply, else 8,000. Evidence is chosen by
//! what matters to a rollback: what the judge finds worse first, then
//! canary-only patterns and templates, the release, the rest — and what is
//! left out is said, by kind, in the prompt.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::evidence::{EvidenceItem, Fact};

/// How long the one-time probe of `/props` and `/tokenize` may take per request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The budget when neither the configuration nor the server names one, tokens.
pub const DEFAULT_MAX_PROMPT_TOKENS: u64 = 8_000;

/// Who counted a prompt's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CountedBy {
    /// The server's own tokenizer (`/tokenize`): exact.
    Server,
    /// An estimate that errs high: one token per digit, one per three other bytes.
    Estimate,
}

/// Where the budget came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetFrom {
    /// `model.max_prompt_tokens`.
    Config,
    /// The server's context size (`/props`) less `max_tokens`.
    ServerContext,
    /// The default, 8,000.
    Default,
}

/// A consultation's first prompt, measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PromptSize {
    /// Tokens of the system prompt, the first message and the tool definitions.
    pub tokens: u64,
    /// How they were counted.
    pub counted_by: CountedBy,
    /// The budget, tokens.
    pub max_prompt_tokens: u64,
    /// Where the budget came from.
    pub budget_from: BudgetFrom,
    /// Evidence items shown.
    pub items_shown: u32,
    /// Evidence items left out to fit (named by kind in the prompt).
    pub items_left_out: u32,
}

/// What one endpoint offers for counting, learnt once.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Tokens the prompt may take.
    pub max_prompt_tokens: u64,
    /// Where that came from.
    pub from: BudgetFrom,
    /// llama.cpp's `/tokenize`, when the server has it, and the client to ask it with.
    tokenize: Option<(reqwest::Client, String)>,
}

/// Tokens in `text`, estimated high: tokenizers split numbers into one token
/// per digit (or a few), and prose and JSON average three to four bytes.
pub fn estimate(text: &str) -> u64 {
    let digits = text.bytes().filter(u8::is_ascii_digit).count() as u64;
    let other = text.len() as u64 - digits;
    digits + other.div_ceil(3)
}

/// The server's root: `http://host:8080/v1` → `http://host:8080`.
fn root(base_url: &str) -> &str {
    let b = base_url.trim_end_matches('/');
    b.strip_suffix("/v1").unwrap_or(b)
}

impl Budget {
    /// Ask the server once what it offers: `/props` for its context size and
    /// `/tokenize` for exact counts. Any failure means the estimate and the
    /// configured or default budget; no credential is sent.
    pub async fn probe(base_url: &str, configured: Option<u64>, reply_tokens: u32) -> Budget {
        let http = reqwest::Client::builder().build().ok();
        let root = root(base_url);
        let (mut n_ctx, mut tokenize) = (None, None);
        if let Some(http) = &http {
            if let Some(props) = get_json(http, &format!("{root}/props")).await {
                n_ctx = props["default_generation_settings"]["n_ctx"].as_u64().filter(|n| *n > 0);
            }
            let url = format!("{root}/tokenize");
            if count_with(http, &url, "ok", PROBE_TIMEOUT).await.is_some() {
                tokenize = Some((http.clone(), url));
            }
        }
        let (max_prompt_tokens, from) = match (configured, n_ctx) {
            (Some(n), _) => (n, BudgetFrom::Config),
            // Room for the reply, and a margin for the chat template's own tokens.
            (None, Some(ctx)) => (ctx.saturating_sub(u64::from(reply_tokens) + 64).max(256), BudgetFrom::ServerContext),
            (None, None) => (DEFAULT_MAX_PROMPT_TOKENS, BudgetFrom::Default),
        };
        info!(max_prompt_tokens, ?from, exact = tokenize.is_some(), "Model prompt budget.");
        Budget { max_prompt_tokens, from, tokenize }
    }

    /// A budget without a server to ask (tests, `eval` without one).
    pub fn fixed(max_prompt_tokens: u64) -> Budget {
        Budget { max_prompt_tokens, from: BudgetFrom::Config, tokenize: None }
    }

    /// Tokens in `text`: the server's count when it has one, else the estimate.
    pub async fn count(&self, text: &str) -> (u64, CountedBy) {
        if let Some((http, url)) = &self.tokenize
            && let Some(n) = count_with(http, url, text, Duration::from_secs(10)).await
        {
            return (n, CountedBy::Server);
        }
        (estimate(text), CountedBy::Estimate)
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    http.get(url).timeout(PROBE_TIMEOUT).send().await.ok()?.error_for_status().ok()?.json().await.ok()
}

async fn count_with(http: &reqwest::Client, url: &str, text: &str, timeout: Duration) -> Option<u64> {
    let r = http.post(url).timeout(timeout).json(&serde_json::json!({ "content": text })).send().await.ok()?;
    let v: serde_json::Value = r.error_for_status().ok()?.json().await.ok()?;
    v["tokens"].as_array().map(|t| t.len() as u64)
}

/// How much an item matters to a rollback decision: lower first.
fn rank(item: &EvidenceItem, worse_metrics: &[String]) -> u8 {
    let kind = item.id.split_once(':').map_or(item.id.as_str(), |(k, _)| k);
    let label = item.id.split_once(':').map_or("", |(_, l)| l);
    match (kind, item.fact) {
        (_, Fact::CanaryWorse) => 0,
        ("template", _) | (_, Fact::CanaryOnly) => 1,
        ("metric" | "name", _) if worse_metrics.iter().any(|m| m == label) => 1,
        ("release", _) => 2,
        ("judge", _) => 3,
        ("log" | "event", _) => 4,
        _ => 5,
    }
}

/// Tokens an item takes in the list, estimated high.
fn cost(item: &EvidenceItem) -> u64 {
    estimate(&item.text) + estimate(&item.id) + 8
}

/// The items that fit in `room` tokens (in their original order) and a
/// sentence naming, by kind, what was left out; `None` when nothing was.
pub fn select(items: Vec<EvidenceItem>, room: u64) -> (Vec<EvidenceItem>, Option<String>) {
    let worse: Vec<String> = items
        .iter()
        .filter(|i| i.id.starts_with("judge:") && i.fact == Fact::CanaryWorse)
        .map(|i| i.id.trim_start_matches("judge:").to_string())
        .collect();
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| rank(&items[i], &worse));
    let mut keep = vec![false; items.len()];
    let mut used = 0;
    for i in order {
        let c = cost(&items[i]);
        // What the judge finds worse is always shown: a rollback rests on it.
        if used + c <= room || items[i].fact == Fact::CanaryWorse {
            keep[i] = true;
            used += c;
        }
    }
    let mut left: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (item, _) in items.iter().zip(&keep).filter(|(_, k)| !**k) {
        *left.entry(kind_name(&item.id)).or_default() += 1;
    }
    let note = (!left.is_empty()).then(|| left.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", "));
    let shown = items.into_iter().zip(keep).filter(|(_, k)| *k).map(|(i, _)| i).collect();
    (shown, note)
}

/// Plain words for an id's kind (fixed words only: this reaches trusted text).
fn kind_name(id: &str) -> &'static str {
    match id.split_once(':').map_or(id, |(k, _)| k) {
        "judge" => "judge findings (query_metric)",
        "metric" => "metric levels (query_metric)",
        "name" => "metric names as the data gives them (query_metric)",
        "template" => "log templates (fetch_logs)",
        "log" => "log lines (fetch_logs)",
        "event" => "events (list_events)",
        _ => "other items",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, fact: Fact, text: &str) -> EvidenceItem {
        EvidenceItem { id: id.into(), fact, untrusted: id.starts_with("log"), text: text.into() }
    }

    #[test]
    fn the_estimate_errs_high_on_digits_and_text() {
        assert_eq!(estimate("0.0123"), 5 + 1);
        assert_eq!(estimate("abcdef"), 2);
        // 400 digits, 1,400 other bytes.
        assert_eq!(estimate(&"error ratio 0.031 ".repeat(100)), 400 + 467);
    }

    #[test]
    fn what_the_judge_finds_worse_comes_first_and_what_is_left_out_is_named() {
        let long = "x".repeat(300);
        let items = vec![
            item("metric:latency", Fact::Context, &long),
            item("judge:errors", Fact::CanaryWorse, "errors failing"),
            item("log:1", Fact::BothSides, &long),
            item("log:2", Fact::CanaryOnly, "timeout"),
            item("metric:errors", Fact::Context, "errors 0.03 vs 0.01"),
            item("release:history", Fact::Context, "v42 replacing v41"),
        ];
        let (shown, note) = select(items.clone(), 80);
        let ids: Vec<&str> = shown.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["judge:errors", "log:2", "metric:errors", "release:history"], "kept in their order");
        assert_eq!(note.as_deref(), Some("1 log lines (fetch_logs), 1 metric levels (query_metric)"));
        // A failing finding is shown even when nothing fits.
        let (shown, _) = select(items.clone(), 0);
        assert_eq!(shown.len(), 1);
        let (shown, note) = select(items, u64::MAX);
        assert_eq!((shown.len(), note), (6, None));
    }
}

//! The agent's own metrics, in Prometheus text format (`GET /metrics`).
//! Counters are bumped where things happen (ticks, decisions, actions,
//! approvals, model calls); gauges of current state are set at scrape time
//! from the agent's release table, so they cannot drift from it.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label called `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// Decision, action or state name.
    pub kind: String,
}

/// An executor action and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `rollback` or `promote`.
    pub action: String,
    /// `verified`, `not_verified`, `failed`, ...
    pub result: String,
}

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    /// Releases by state, set at scrape time.
    pub releases: Family<Kind, Gauge>,
    /// Decisions policy made at ticks, by kind.
    pub decisions: Family<Kind, Counter>,
    /// Ticks judged.
    pub ticks: Counter,
    /// Seconds a tick took (observe, judge, decide, record).
    pub tick_seconds: Histogram,
    /// Ticks that took longer than the time between ticks.
    pub missed_ticks: Counter,
    /// Seconds a ledger append took, end to end (queue, batch, commit).
    pub ledger_append_seconds: Histogram,
    /// Appends that found the ledger writer's queue full and waited for room
    /// since the agent started (set at scrape time; appends are never dropped).
    pub ledger_queue_waits: Gauge,
    /// The longest such wait, seconds (set at scrape time).
    pub ledger_queue_wait_max_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Model consultations answered.
    pub model_calls: Counter,
    /// Model tokens spent, by kind (`prompt`, `completion`).
    pub model_tokens: Family<Kind, Counter>,
    /// Model verdicts rejected (unsupported claims, bad shape) or unavailable.
    pub model_rejections: Counter,
    /// Executor actions by kind and result.
    pub actions: Family<ActionLabels, Counter>,
    /// Approval requests open now, set at scrape time.
    pub approvals_pending: Gauge,
    /// Answers to approval requests, by ruling.
    pub approval_answers: Family<Kind, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("backstop");
        let m = Metrics {
            releases: Family::default(),
            decisions: Family::default(),
            ticks: Counter::default(),
            tick_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            missed_ticks: Counter::default(),
            ledger_append_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            ledger_queue_waits: Gauge::default(),
            ledger_queue_wait_max_seconds: Gauge::default(),
            model_calls: Counter::default(),
            model_tokens: Family::default(),
            model_rejections: Counter::default(),
            actions: Family::default(),
            approvals_pending: Gauge::default(),
            approval_answers: Family::default(),
            registry: Registry::default(),
        };
        registry.register("releases", "Releases by state", m.releases.clone());
        registry.register("decisions", "Policy decisions at ticks, by kind", m.decisions.clone());
        registry.register("ticks", "Ticks judged", m.ticks.clone());
        registry.register("tick_seconds", "Time a tick took", m.tick_seconds.clone());
        registry.register("missed_ticks", "Ticks that overran the time between ticks", m.missed_ticks.clone());
        registry.register("ledger_append_seconds", "Ledger append latency", m.ledger_append_seconds.clone());
        let waits = "Appends that waited for room in the ledger writer's queue (never dropped)";
        registry.register("ledger_queue_waits", waits, m.ledger_queue_waits.clone());
        let longest = "The longest wait for room in the ledger writer's queue";
        registry.register("ledger_queue_wait_max_seconds", longest, m.ledger_queue_wait_max_seconds.clone());
        registry.register("model_calls", "Model consultations answered", m.model_calls.clone());
        registry.register("model_tokens", "Model tokens spent, by kind (prompt, completion)", m.model_tokens.clone());
        registry.register("model_rejections", "Model verdicts rejected or unavailable", m.model_rejections.clone());
        registry.register("executor_actions", "Executor actions by kind and result", m.actions.clone());
        registry.register("approvals_pending", "Approval requests open now", m.approvals_pending.clone());
        registry.register("approval_answers", "Answers to approval requests, by ruling", m.approval_answers.clone());
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Tokens one consultation spent.
    pub fn model_tokens(&self, prompt: u64, completion: u64) {
        self.model_tokens.get_or_create(&Kind { kind: "prompt".into() }).inc_by(prompt);
        self.model_tokens.get_or_create(&Kind { kind: "completion".into() }).inc_by(completion);
    }

    /// One tick: its duration against the time it had.
    pub fn tick(&self, decision: &str, took: Duration, budget: Duration) {
        self.ticks.inc();
        self.decisions.get_or_create(&Kind { kind: decision.to_string() }).inc();
        self.tick_seconds.observe(took.as_secs_f64());
        if !budget.is_zero() && took > budget {
            self.missed_ticks.inc();
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_the_prefix_and_labels() {
        let m = Metrics::default();
        m.tick("rollback", Duration::from_millis(5), Duration::from_millis(1));
        m.actions.get_or_create(&ActionLabels { action: "rollback".into(), result: "verified".into() }).inc();
        let text = m.render();
        assert!(text.contains("backstop_ticks_total 1"), "{text}");
        assert!(text.contains("backstop_missed_ticks_total 1"), "{text}");
        assert!(text.contains("backstop_decisions_total{kind=\"rollback\"} 1"), "{text}");
        assert!(text.contains("backstop_executor_actions_total{action=\"rollback\",result=\"verified\"} 1"), "{text}");
        assert!(text.contains("backstop_tick_seconds_bucket"), "{text}");
        m.model_tokens(1800, 120);
        m.model_tokens(200, 30);
        let text = m.render();
        assert!(text.contains("backstop_model_tokens_total{kind=\"prompt\"} 2000"), "{text}");
        assert!(text.contains("backstop_model_tokens_total{kind=\"completion\"} 150"), "{text}");
    }
}

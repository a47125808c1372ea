//! One consultation: render the prompts, run the tool-calling loop within
//! the release's budget, parse and validate the verdict. Whatever happens,
//! the result is a value the orchestrator records and policy reads; nothing
//! here can act.

use std::collections::HashMap;
use std::sync::Arc;

use async_openai::types::chat::{
    ChatCompletionMessageToolCalls, ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestToolMessageArgs, ChatCompletionRequestUserMessageArgs,
    ChatCompletionResponseMessage, ChatCompletionTool, ChatCompletionToolChoiceOption, ChatCompletionTools,
    CreateChatCompletionRequest, CreateChatCompletionRequestArgs, FunctionObject, ResponseFormat,
    ResponseFormatJsonSchema, ToolChoiceOptions,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing::{Instrument, info, info_span, warn};

use super::budget::{Budget, PromptSize, estimate, select};
use super::evidence::{EvidenceItem, catalogue, scrub_names};
use super::prompt::{AssessContext, assess, prompt_version, system};
use super::tools::{ToolBox, ToolOutput, definitions};
use super::verdict::{CanaryVerdict, Rejection, parse, strict_schema, validate};
use super::{ChatClient, ModelConfig, ModelError, OutputMode, Spent, Trigger};
use crate::digest::digest;
use crate::judge::{JudgeResult, Verdict};
use crate::policy::{ModelInput, ReleaseFacts};
use crate::signals::Observation;

/// Tokens and calls, as the server reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    /// Chat requests that got an answer.
    pub calls: u32,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Total tokens.
    pub total_tokens: u64,
}

impl Usage {
    fn add(&mut self, other: Usage) {
        self.calls += other.calls;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// One tool call as the ledger records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolCallRecord {
    /// Tool name as the model sent it.
    pub name: String,
    /// Arguments as the model sent them.
    pub arguments: String,
    /// SHA-256 of the result sent back.
    pub result_digest: String,
    /// Evidence ids the result added.
    pub evidence: Vec<String>,
    /// The call was refused (unknown tool, bad arguments, a result larger
    /// than the prompt budget leaves room for).
    pub error: bool,
}

/// The outcome of one consultation, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Consultation {
    /// Why the model was asked.
    pub trigger: String,
    /// Model name.
    pub model: String,
    /// Prompt versions.
    pub prompt_version: String,
    /// What policy sees.
    pub input: ModelInput,
    /// The verdict as parsed, even when rejected.
    pub verdict: Option<CanaryVerdict>,
    /// Why the verdict was rejected.
    pub rejection: Option<Rejection>,
    /// Why there is no verdict (endpoint, budget, refusal).
    pub error: Option<String>,
    /// The evidence the verdict cites, as shown.
    pub cited: Vec<EvidenceItem>,
    /// Tool calls in order.
    pub tool_calls: Vec<ToolCallRecord>,
    /// This consultation's usage.
    pub usage: Usage,
    /// Release time (s) of the tick whose evidence the model was shown.
    #[serde(default)]
    pub asked_at_s: u64,
    /// Release time (s) of the tick that took the answer: `asked_at_s` when it
    /// came within the tick's deadline, later when it came late.
    #[serde(default)]
    pub arrived_at_s: u64,
    /// Real milliseconds from the first request to the answer (or the failure).
    #[serde(default)]
    pub elapsed_ms: u64,
    /// The first prompt's size against its budget (absent when none was built).
    #[serde(default)]
    pub prompt: Option<PromptSize>,
}

impl Consultation {
    /// A consultation that produced nothing: `reason` is why.
    pub fn failed(trigger: String, model: String, asked_at_s: u64, reason: String) -> Self {
        Self {
            trigger,
            model,
            prompt_version: prompt_version(),
            input: ModelInput::Unavailable { reason: reason.clone() },
            verdict: None,
            rejection: None,
            error: Some(reason),
            cited: vec![],
            tool_calls: vec![],
            usage: Usage::default(),
            asked_at_s,
            arrived_at_s: asked_at_s,
            elapsed_ms: 0,
            prompt: None,
        }
    }
}

/// The model endpoint and its settings, shared by all releases.
pub struct Assessor {
    cfg: ModelConfig,
    client: ChatClient,
    /// The verdict's strict schema, generated once.
    schema: serde_json::Value,
    /// The tool definitions as sent, generated once.
    tools: Vec<ChatCompletionTools>,
    /// This endpoint refused `json_schema` once: JSON mode from then on.
    json_schema_refused: std::sync::atomic::AtomicBool,
    /// The prompt budget and how to count, learnt from the server once.
    budget: tokio::sync::OnceCell<Budget>,
}

impl Assessor {
    /// Build the client; fails on a missing API key variable.
    pub fn new(cfg: ModelConfig) -> Result<Self, ModelError> {
        let client = ChatClient::new(&cfg)?;
        let tools = definitions()
            .into_iter()
            .map(|(name, description, mut parameters)| {
                // The schema's own description repeats the tool's: tokens for nothing.
                if let Some(o) = parameters.as_object_mut() {
                    o.remove("description");
                }
                ChatCompletionTools::Function(ChatCompletionTool {
                    function: FunctionObject {
                        name: name.into(),
                        description: Some(description.into()),
                        parameters: Some(parameters),
                        strict: Some(true),
                    },
                })
            })
            .collect();
        let json_schema_refused = std::sync::atomic::AtomicBool::new(false);
        let budget = tokio::sync::OnceCell::new();
        Ok(Self { cfg, client, schema: strict_schema::<CanaryVerdict>(), tools, json_schema_refused, budget })
    }

    /// The model's name.
    pub fn model_name(&self) -> &str {
        &self.cfg.name
    }

    /// The prompt budget, asked of the server on first use.
    pub async fn budget(&self) -> &Budget {
        self.budget
            .get_or_init(|| Budget::probe(&self.cfg.base_url, self.cfg.max_prompt_tokens, self.cfg.max_tokens))
            .await
    }
}

/// One release's use of the model: its budget and what it has spent.
#[derive(Clone)]
pub struct ModelSession {
    assessor: Arc<Assessor>,
    /// Real time one consultation may take.
    deadline: std::time::Duration,
    /// Spent so far.
    pub used: Usage,
}

/// What a consultation looks at.
pub struct Ask<'a> {
    /// Why now.
    pub trigger: &'a Trigger,
    /// The release.
    pub facts: &'a ReleaseFacts,
    /// This tick's observation.
    pub obs: &'a Observation,
    /// This tick's judgement.
    pub judged: &'a JudgeResult,
}

/// The first user message of a consultation and the evidence it shows.
/// Trusted text carries backstop's own words, numbers, ids and plain metric
/// labels; everything from the watched systems sits JSON-escaped inside the
/// untrusted block.
pub fn first_message(
    ask: &Ask<'_>,
    schema: Option<String>,
    room: u64,
) -> Result<(String, Vec<EvidenceItem>, usize), ModelError> {
    let all = catalogue(ask.obs, ask.judged, ask.facts);
    let total = all.len();
    let (items, omitted) = select(all, room);
    let left_out = total - items.len();
    let verdict_word = match ask.judged.verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
    };
    let trigger = ask.trigger.to_string();
    let summary = scrub_names(&ask.judged.summary, ask.judged.findings.iter().map(|f| f.metric.as_str()));
    let ctx = AssessContext {
        release_id: &ask.facts.release_id,
        service: &ask.facts.service,
        candidate: &ask.facts.candidate_revision,
        last_known_good: ask.facts.last_known_good.as_deref().unwrap_or("none recorded"),
        now_s: ask.obs.now_s,
        duration_s: ask.obs.duration_s,
        trigger: &trigger,
        judge_verdict: verdict_word,
        judge_summary: &summary,
        trusted: items.iter().filter(|i| !i.untrusted).collect(),
        untrusted: items.iter().filter(|i| i.untrusted).collect(),
        schema,
        omitted,
    };
    let user = assess(&ctx)?;
    Ok((user, items, left_out))
}

struct Turns {
    prompt: Option<PromptSize>,
    /// Tokens the conversation holds so far (the first prompt as counted,
    /// then every echo and tool result estimated high), against
    /// `max_prompt_tokens`: a later turn must fit the server's context too.
    held_tokens: u64,
    /// The prompt budget, tokens.
    max_prompt_tokens: u64,
    messages: Vec<ChatCompletionRequestMessage>,
    shown: HashMap<String, EvidenceItem>,
    tool_calls: Vec<ToolCallRecord>,
    usage: Usage,
}

impl ModelSession {
    /// A fresh budget for one release whose ticks are `tick_s` apart: a
    /// consultation gets `consultation_deadline_s`, and never more than 80 %
    /// of a tick (`tick_s = 0`: a replay no tick waits on, no cap).
    pub fn new(assessor: Arc<Assessor>, tick_s: u64) -> Self {
        let cap = tick_s as f64 * 0.8;
        let secs = assessor.cfg.consultation_deadline_s.min(if cap > 0.0 { cap } else { f64::MAX });
        Self { deadline: std::time::Duration::from_secs_f64(secs.max(0.1)), assessor, used: Usage::default() }
    }

    /// Release seconds a verdict stays valid.
    pub fn verdict_valid_s(&self) -> u64 {
        self.assessor.cfg.verdict_valid_s
    }

    /// The model's name.
    pub fn model_name(&self) -> &str {
        &self.assessor.cfg.name
    }

    /// Real time a tick waits for a consultation.
    pub fn deadline(&self) -> std::time::Duration {
        self.deadline
    }

    /// Count a consultation that ran elsewhere (beside the loop) against this budget.
    pub fn spent(&mut self, usage: Usage) {
        self.used.add(usage);
    }

    /// Ask the model within the tick's deadline and count what it spent.
    /// Never fails: every failure is a recorded `Unavailable`.
    pub async fn consult(&mut self, ask: Ask<'_>) -> Consultation {
        let c = self.run(ask, self.deadline).await;
        self.used.add(c.usage);
        c
    }

    /// Ask the model, giving up after `limit` real time; spends nothing from
    /// this session (the caller counts `usage`), so a copy can run in a task.
    pub async fn run(&self, ask: Ask<'_>, limit: std::time::Duration) -> Consultation {
        let span = info_span!("model", model = %self.assessor.cfg.name, trigger = %ask.trigger);
        let mut turns = Turns {
            prompt: None,
            held_tokens: 0,
            max_prompt_tokens: u64::MAX,
            messages: vec![],
            shown: HashMap::new(),
            tool_calls: vec![],
            usage: Usage::default(),
        };
        let started = std::time::Instant::now();
        let answer = match tokio::time::timeout(limit, self.converse(&ask, &mut turns).instrument(span.clone())).await {
            Ok(a) => a,
            Err(_) => Err(ModelError::Deadline(limit)),
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut c = Consultation {
            trigger: ask.trigger.to_string(),
            model: self.assessor.cfg.name.clone(),
            prompt_version: prompt_version(),
            input: ModelInput::Unavailable { reason: String::new() },
            verdict: None,
            rejection: None,
            error: None,
            cited: vec![],
            tool_calls: turns.tool_calls,
            usage: turns.usage,
            asked_at_s: ask.obs.now_s,
            arrived_at_s: ask.obs.now_s,
            elapsed_ms,
            prompt: turns.prompt,
        };
        settle(&mut c, answer, &turns.shown, &span);
        c
    }

    fn budget_left(&self, turns: &Turns) -> Result<(), ModelError> {
        let cfg = &self.assessor.cfg;
        let calls = self.used.calls + turns.usage.calls;
        let tokens = self.used.total_tokens + turns.usage.total_tokens;
        if calls >= cfg.max_calls_per_release {
            return Err(ModelError::Budget(Spent::Calls { used: calls, max: cfg.max_calls_per_release }));
        }
        if tokens >= cfg.max_tokens_per_release {
            return Err(ModelError::Budget(Spent::Tokens { used: tokens, max: cfg.max_tokens_per_release }));
        }
        Ok(())
    }

    /// The loop: returns the final reply text, or why there is none.
    async fn converse(&self, ask: &Ask<'_>, turns: &mut Turns) -> Result<String, ModelError> {
        let cfg = &self.assessor.cfg;
        let system = system(&ask.facts.service)?;
        let (user, items) = self.fit(ask, &system, turns).await?;
        turns.shown.extend(items.into_iter().map(|i| (i.id.clone(), i)));
        turns.messages.push(msg(ChatCompletionRequestSystemMessageArgs::default().content(system).build())?);
        turns.messages.push(msg(ChatCompletionRequestUserMessageArgs::default().content(user).build())?);
        let tools = ToolBox::new(ask.obs, ask.facts, ask.judged);
        for turn in 0..cfg.max_turns {
            // Tools are offered on turns without a response format (a server's
            // grammar for the format would leave no room for a tool call); the
            // last turn asks for the structured verdict and offers no tools.
            let stage = if turn + 1 < cfg.max_turns { Stage::Tools } else { Stage::Verdict };
            let m = self.call(turns, stage).await?;
            let calls = m.tool_calls.unwrap_or_default();
            if calls.is_empty() {
                let content = m.content.filter(|c| !c.trim().is_empty()).ok_or_else(no_content)?;
                // An attempt at JSON is the verdict (checked, and rejected if wrong); only prose gets asked again.
                let attempt = content.trim_start().starts_with(['{', '`']);
                if stage == Stage::Verdict || attempt {
                    return Ok(content);
                }
                // Prose on a tools turn: keep it, and ask for the verdict in its format.
                return self.final_verdict(turns, content).await;
            }
            // Some servers reject an assistant turn without `content` (or with null): send "".
            turns.held_tokens += estimate(&serde_json::to_string(&calls).unwrap_or_default());
            let echo =
                ChatCompletionRequestAssistantMessageArgs::default().content("").tool_calls(calls.clone()).build();
            turns.messages.push(msg(echo)?);
            for call in calls {
                self.run_tool(&tools, call, turns)?;
            }
        }
        Err(ModelError::NoVerdict { turns: cfg.max_turns })
    }

    /// The first message built to the prompt budget: the room for evidence
    /// is what the budget leaves after the fixed parts, and shrinks (at most
    /// twice) when the server counts the result over the budget.
    async fn fit(
        &self,
        ask: &Ask<'_>,
        system: &str,
        turns: &mut Turns,
    ) -> Result<(String, Vec<EvidenceItem>), ModelError> {
        let budget = self.assessor.budget().await;
        let schema = (self.output() == OutputMode::JsonObject).then(|| self.assessor.schema.to_string());
        // Tool definitions are part of the prompt on turns that offer them.
        let tools = if self.assessor.cfg.max_turns > 1 {
            serde_json::to_string(&self.assessor.tools).unwrap_or_default()
        } else {
            String::new()
        };
        let (bare, _, _) = first_message(ask, schema.clone(), 0)?;
        let fixed = estimate(system) + estimate(&bare) + estimate(&tools);
        // With tools on offer, a quarter of the budget stays for what the model fetches.
        let target = if tools.is_empty() { budget.max_prompt_tokens } else { budget.max_prompt_tokens / 4 * 3 };
        let mut room = target.saturating_sub(fixed);
        let mut attempt = 0;
        loop {
            let (user, items, left_out) = first_message(ask, schema.clone(), room)?;
            let (tokens, counted_by) = budget.count(&format!("{system}\n{user}\n{tools}")).await;
            turns.prompt = Some(PromptSize {
                tokens,
                counted_by,
                max_prompt_tokens: budget.max_prompt_tokens,
                budget_from: budget.from,
                items_shown: items.len() as u32,
                items_left_out: left_out as u32,
            });
            if tokens <= target || attempt == 2 || room == 0 {
                (turns.held_tokens, turns.max_prompt_tokens) = (tokens, budget.max_prompt_tokens);
                return Ok((user, items));
            }
            let over = tokens - target;
            room = room.saturating_sub(over + over / 4);
            attempt += 1;
        }
    }

    /// Structured outputs as this endpoint takes them: JSON mode once it has refused `json_schema`.
    fn output(&self) -> OutputMode {
        if self.assessor.json_schema_refused.load(std::sync::atomic::Ordering::Relaxed) {
            OutputMode::JsonObject
        } else {
            self.assessor.cfg.output
        }
    }

    /// One call at `stage`, with budget, usage and refusal handled. A server
    /// that refuses `json_schema` gets JSON mode with the schema in the
    /// prompt instead — now and for the rest of this endpoint's life.
    async fn call(&self, turns: &mut Turns, stage: Stage) -> Result<ChatCompletionResponseMessage, ModelError> {
        self.budget_left(turns)?;
        let req = self.request(&turns.messages, stage)?;
        let resp = match self.assessor.client.complete(req).await {
            Err(e) if stage == Stage::Verdict && self.output() == OutputMode::JsonSchema && refuses_json_schema(&e) => {
                warn!(error = %crate::error::chain(&e), "The endpoint refuses json_schema; using JSON mode with the schema in the prompt from now on.");
                self.assessor.json_schema_refused.store(true, std::sync::atomic::Ordering::Relaxed);
                let schema =
                    format!("Answer with one JSON object that matches this JSON Schema:\n{}", self.assessor.schema);
                turns.messages.push(msg(ChatCompletionRequestUserMessageArgs::default().content(schema).build())?);
                let req = self.request(&turns.messages, stage)?;
                self.assessor.client.complete(req).await
            }
            other => other,
        }?;
        turns.usage.calls += 1;
        if let Some(u) = &resp.usage {
            turns.usage.prompt_tokens += u64::from(u.prompt_tokens);
            turns.usage.completion_tokens += u64::from(u.completion_tokens);
            turns.usage.total_tokens += u64::from(u.total_tokens);
        }
        let choice = resp
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ModelError::BadResponse("the reply has no choices".into()))?;
        if let Some(refusal) = choice.message.refusal.as_ref().filter(|r| !r.trim().is_empty()) {
            return Err(ModelError::Declined(refusal.clone()));
        }
        Ok(choice.message)
    }

    /// The model answered in prose while tools were on offer: ask once more, for the verdict.
    async fn final_verdict(&self, turns: &mut Turns, prose: String) -> Result<String, ModelError> {
        turns.messages.push(msg(ChatCompletionRequestAssistantMessageArgs::default().content(prose).build())?);
        let ask = "Now answer with the verdict: one JSON object in the required format, and nothing else.";
        turns.messages.push(msg(ChatCompletionRequestUserMessageArgs::default().content(ask).build())?);
        let m = self.call(turns, Stage::Verdict).await?;
        m.content.filter(|c| !c.trim().is_empty()).ok_or_else(no_content)
    }

    fn run_tool(
        &self,
        tools: &ToolBox<'_>,
        call: ChatCompletionMessageToolCalls,
        turns: &mut Turns,
    ) -> Result<(), ModelError> {
        let (id, name, args) = match &call {
            ChatCompletionMessageToolCalls::Function(f) => {
                (f.id.clone(), f.function.name.clone(), f.function.arguments.clone())
            }
            ChatCompletionMessageToolCalls::Custom(c) => (c.id.clone(), "custom".into(), String::new()),
        };
        let out = info_span!("tool_call", tool = %name).in_scope(|| tools.call(&name, &args));
        let out = fit_result(out, turns.max_prompt_tokens.saturating_sub(turns.held_tokens));
        turns.held_tokens += estimate(&out.content);
        turns.tool_calls.push(ToolCallRecord {
            name,
            arguments: args,
            result_digest: digest(out.content.as_bytes()),
            evidence: out.items.iter().map(|i| i.id.clone()).collect(),
            error: out.error,
        });
        turns.shown.extend(out.items.into_iter().map(|i| (i.id.clone(), i)));
        let reply = ChatCompletionRequestToolMessageArgs::default().content(out.content).tool_call_id(id).build();
        turns.messages.push(msg(reply)?);
        Ok(())
    }

    fn request(
        &self,
        messages: &[ChatCompletionRequestMessage],
        stage: Stage,
    ) -> Result<CreateChatCompletionRequest, ModelError> {
        let cfg = &self.assessor.cfg;
        let mut b = CreateChatCompletionRequestArgs::default();
        b.model(&cfg.name).messages(messages.to_vec()).temperature(cfg.temperature);
        // A cap on every call: under constrained decoding a degenerate model
        // can otherwise generate until the timeout, and some servers keep
        // computing after the client gave up.
        #[allow(deprecated)] // `max_tokens` is what vLLM, Ollama and llama.cpp read
        b.max_tokens(cfg.max_tokens);
        match stage {
            Stage::Tools => {
                b.tools(self.assessor.tools.clone());
                // A server that treats a missing tool_choice as "none" would never call one.
                b.tool_choice(ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::Auto));
            }
            Stage::Verdict => {
                b.response_format(match self.output() {
                    OutputMode::JsonSchema => ResponseFormat::JsonSchema {
                        json_schema: ResponseFormatJsonSchema {
                            name: "canary_verdict".into(),
                            description: Some("backstop's structured canary verdict".into()),
                            schema: self.assessor.schema.clone(),
                            strict: Some(true),
                        },
                    },
                    OutputMode::JsonObject => ResponseFormat::JsonObject,
                });
            }
        }
        b.build().map_err(ModelError::Message)
    }
}

/// What the model's answer (or its failure) makes of the consultation `c`:
/// an accepted verdict and the evidence it cited, or why the judge decides alone.
fn settle(
    c: &mut Consultation,
    answer: Result<String, ModelError>,
    shown: &HashMap<String, EvidenceItem>,
    span: &tracing::Span,
) {
    match answer {
        Err(e) => {
            warn!(parent: span, error = %crate::error::chain(&e), "No model verdict; the judge decides alone.");
            // The recorded reason names every cause, not just the outer error.
            let reason = crate::error::chain(&e);
            c.input = ModelInput::Unavailable { reason: reason.clone() };
            c.error = Some(reason);
        }
        Ok(text) => {
            let parsed = parse(&text);
            match parsed.as_ref().map_err(Clone::clone).and_then(|v| validate(v, shown)) {
                Ok(input) => {
                    c.input = input;
                    if let Ok(v) = &parsed {
                        info!(parent: span, action = ?v.action, health = ?v.health, "Model verdict accepted.");
                        let mut seen = std::collections::HashSet::new();
                        let ids = v.findings.iter().flat_map(|f| &f.evidence).filter(|id| seen.insert(*id));
                        c.cited = ids.filter_map(|id| shown.get(id).cloned()).collect();
                    }
                }
                Err(r) => {
                    warn!(parent: span, rejection = %r, "Model verdict rejected; the judge decides alone.");
                    c.input = ModelInput::Unavailable { reason: r.to_string() };
                    c.rejection = Some(r);
                }
            }
            c.verdict = parsed.ok();
        }
    }
}

/// A tool result as it fits in `room` tokens: whole, or — when it would
/// push the next turn's prompt past the budget (and so past the server's
/// context: llama.cpp refuses such a request outright) — replaced by an
/// error that says so, with nothing added to what may be cited.
fn fit_result(out: ToolOutput, room: u64) -> ToolOutput {
    let tokens = estimate(&out.content);
    if tokens <= room {
        return out;
    }
    let message =
        format!("the result ({tokens} tokens) is over the prompt budget ({room} left): ask for less, or answer");
    ToolOutput { content: serde_json::json!({ "error": message }).to_string(), items: vec![], error: true }
}

/// Whether an error says the server does not take `response_format: json_schema`.
fn refuses_json_schema(e: &ModelError) -> bool {
    let message = match e {
        ModelError::Api { status, message } if *status == 400 || *status == 422 || *status >= 500 => message,
        ModelError::Refused(message) => message,
        _ => return false,
    };
    let m = message.to_ascii_lowercase();
    m.contains("json_schema") || m.contains("response_format") || m.contains("json_object")
}

/// What a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Tools on offer, no response format.
    Tools,
    /// The structured verdict, no tools.
    Verdict,
}

fn no_content() -> ModelError {
    ModelError::BadResponse("the reply has no content".into())
}

fn msg<T: Into<ChatCompletionRequestMessage>>(
    built: Result<T, async_openai::error::OpenAIError>,
) -> Result<ChatCompletionRequestMessage, ModelError> {
    built.map(Into::into).map_err(ModelError::Message)
}

#[cfg(test)]
mod untrusted_tests {
    //! No byte of untrusted text reaches the trusted part of the prompt:
    //! hostile text in every field that comes from outside (log lines, event
    //! kinds and messages, metric names, units) is checked against the
    //! rendered first message, outside `<untrusted-telemetry>`.
    use super::*;
    use crate::assessor::TriggerState;
    use crate::judge::{JudgeConfig, judge};
    use crate::policy::{Decision, ReleaseFacts};
    use crate::signals::{Event, LogLine, Side};

    fn facts() -> ReleaseFacts {
        ReleaseFacts {
            release_id: "r1".into(),
            service: "checkout".into(),
            target: "sim/checkout".into(),
            service_targets: 0,
            declared_targets: vec!["sim/checkout".into()].into(),
            candidate_revision: "v42".into(),
            last_known_good: Some("v41".into()),
            quarantine: None,
            last_known_good_from: None,
            irreversible: false,
            environment: "production".into(),
        }
    }

    /// The observation with `hostile` in every untrusted field.
    fn hostile_obs(hostile: &str, seed: u64) -> Observation {
        let mut o = crate::bench::synthetic_observation(2, 60, seed);
        o.metrics[0].spec.name = hostile.to_string();
        o.metrics[0].spec.unit = hostile.into();
        o.metrics[1].spec.name = format!("{hostile}{hostile}");
        for (t_s, side) in [(100, Side::Canary), (200, Side::Canary), (300, Side::Canary), (310, Side::Baseline)] {
            o.logs.push(LogLine { t_s, target: side, level: "error".into(), message: hostile.into() });
            o.events.push(Event {
                t_s,
                target: side,
                kind: crate::signals::EventKind::named(hostile),
                message: hostile.into(),
            });
        }
        // Enough error lines that the log judge mines the hostile text into a template finding.
        for t_s in (320..560).step_by(20) {
            o.logs.push(LogLine { t_s, target: Side::Canary, level: "error".into(), message: hostile.into() });
        }
        o
    }

    /// The prompt outside the untrusted block, asserting the block is whole.
    fn outside(text: &str) -> String {
        let (before, rest) = text.split_once("<untrusted-telemetry>").expect("an untrusted block");
        let (_, after) = rest.rsplit_once("</untrusted-telemetry>").expect("the block closes");
        assert_eq!(text.matches("</untrusted-telemetry>").count(), 1, "one closing tag: {text}");
        format!("{before}{after}")
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn untrusted_text_never_leaves_its_block(
            tail in "[ -~\u{80}-\u{10ffff}]{0,30}",
            odd in "[<> \"\n\u{202e}\u{200b}{}]",
            seed in 0u64..1000,
        ) {
            let hostile = format!("ZQ{odd}{tail}");
            let obs = hostile_obs(&hostile, seed);
            let judged = judge(&obs, &JudgeConfig::default());
            let mut triggers = TriggerState::default();
            let trigger = triggers
                .check(&judged, &Decision::Continue, Some(&obs))
                .unwrap_or(Trigger::Inconclusive);
            let ask = Ask { trigger: &trigger, facts: &facts(), obs: &obs, judged: &judged };
            let (text, items, _) = first_message(&ask, None, u64::MAX).expect("renders");
            let out = outside(&text).to_lowercase();
            proptest::prop_assert!(!out.contains("zq"), "hostile text outside the block:\n{text}");
            // The model can still read every name, as data.
            let names = items.iter().filter(|i| i.untrusted && i.id.starts_with("name:")).count();
            proptest::prop_assert_eq!(names, 2);
            proptest::prop_assert!(judged.log_templates().iter().any(|(_, t)| t.example.contains("ZQ")), "a template finding");
            proptest::prop_assert!(items.iter().any(|i| i.untrusted && i.id.starts_with("template:")), "its template is evidence");
        }
    }
}

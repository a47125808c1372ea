//! The `backstop.scenario/v1` file format (see `shared/scenarios/FORMAT.md`).
//!
//! Parsing splits a file into what a judge may see ([`ScenarioData`]) and the
//! label only `eval` may read ([`Truth`]), so a judge cannot see the answer by
//! construction.

use crate::field::FieldError;
use std::path::{Path, PathBuf};

use crate::signals::Unit;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{
    BadDirection, BaselineKind, DistributionSeries, Event, LabelSeries, LogLine, MetricSeries, MetricSpec,
    ModelSignals, Side, Traffic,
};

/// The only format value this version reads.
pub const SCENARIO_FORMAT: &str = "backstop.scenario/v1";

/// A scenario file broke the format. Names the file, the field and what was expected.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{path}: cannot read: {reason}")]
    Read {
        /// File path.
        path: PathBuf,
        /// OS error text.
        reason: String,
    },
    /// A field is missing, of the wrong type, or out of range.
    #[error("{path}: field `{field}`: expected {expected}")]
    Field {
        /// File path.
        path: PathBuf,
        /// Field path inside the document, e.g. `metrics[1].canary`.
        field: String,
        /// What a valid value looks like, and what was found.
        expected: String,
    },
    /// A field is missing or unknown, or a value of the wrong type.
    #[error("{path}: {source}")]
    Shape {
        /// File path.
        path: PathBuf,
        /// Where, and what the parser expected.
        #[source]
        source: crate::field::ShapeError,
    },
}

/// The label of a scenario. Only `eval` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    /// The release should be rolled back.
    pub bad: bool,
    /// When the fault begins, seconds since canary start.
    #[serde(default)]
    pub onset_s: Option<u64>,
    /// Free-text cause.
    #[serde(default)]
    pub cause: Option<String>,
}

/// What a judge may see of a scenario: everything but the truth.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioData {
    /// Scenario name.
    pub name: String,
    /// Free text for humans.
    pub description: String,
    /// Service name.
    pub service: String,
    /// Seconds between samples.
    pub step_s: u32,
    /// Analysis window length in seconds.
    pub duration_s: u64,
    /// Requests per step, if recorded.
    pub traffic: Option<Traffic>,
    /// What the baseline series is.
    pub baseline_kind: BaselineKind,
    /// Metric series over the whole window.
    pub metrics: Vec<MetricSeries>,
    /// Log lines.
    pub logs: Vec<LogLine>,
    /// Events.
    pub events: Vec<Event>,
    /// Model-release signals: histograms and delayed labels (docs/model-releases.md).
    pub ml: ModelSignals,
}

impl ScenarioData {
    /// A whole observed window as a recording named `name` (a past
    /// release read back from its source, for calibration).
    pub fn from_observation(name: String, obs: super::Observation) -> ScenarioData {
        ScenarioData {
            name,
            description: String::new(),
            service: obs.service,
            step_s: obs.step_s,
            duration_s: obs.duration_s,
            traffic: obs.traffic,
            baseline_kind: obs.baseline_kind,
            metrics: obs.metrics,
            logs: obs.logs,
            events: obs.events,
            ml: obs.ml,
        }
    }

    /// The release as if it had ended at `end_s` (whole steps): what a
    /// faulty release looked like before its fault began is a healthy one.
    /// An earlier-window baseline lies wholly in the past and is kept whole.
    pub fn prefix(&self, end_s: u64) -> ScenarioData {
        let step = u64::from(self.step_s.max(1));
        let n = (end_s.min(self.duration_s) / step) as usize;
        let history = self.baseline_kind != BaselineKind::Concurrent;
        let cut = |v: &[Option<f64>]| v[..n.min(v.len())].to_vec();
        let mut d = self.clone();
        d.duration_s = n as u64 * step;
        for m in &mut d.metrics {
            m.canary = cut(&m.canary);
            if !history {
                m.baseline = cut(&m.baseline);
            }
        }
        d.ml = self.ml.first_steps(n, history);
        if let Some(t) = &mut d.traffic {
            t.baseline.truncate(n);
            t.canary.truncate(n);
        }
        d.logs.retain(|l| l.t_s < d.duration_s);
        d.events.retain(|e| e.t_s < d.duration_s);
        d
    }
}

/// A parsed scenario: observable data plus its optional label.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Where it came from.
    pub path: PathBuf,
    /// What judges may see.
    pub data: ScenarioData,
    /// The label, never shown to a judge.
    pub truth: Option<Truth>,
}

fn is_concurrent(k: &BaselineKind) -> bool {
    *k == BaselineKind::Concurrent
}

// Wire shapes: unknown fields are ignored so the format can grow.
#[derive(Deserialize, Serialize)]
struct FileDoc {
    format: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    service: String,
    step_s: u32,
    duration_s: u64,
    #[serde(default, skip_serializing_if = "is_concurrent")]
    baseline_kind: BaselineKind,
    #[serde(default)]
    traffic: Option<FileTraffic>,
    metrics: Vec<FileMetric>,
    #[serde(default)]
    logs: Vec<LogLine>,
    #[serde(default)]
    events: Vec<Event>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    distributions: Vec<DistributionSeries>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    labels: Vec<LabelSeries>,
    #[serde(default)]
    truth: Option<Truth>,
}

#[derive(Deserialize, Serialize)]
struct FileTraffic {
    baseline: Vec<u64>,
    canary: Vec<u64>,
}

#[derive(Deserialize, Serialize)]
struct FileMetric {
    name: String,
    #[serde(default)]
    unit: Unit,
    bad_direction: BadDirection,
    baseline: Vec<Option<f64>>,
    canary: Vec<Option<f64>>,
}

/// Parse and validate one scenario document. `path` is used in error messages.
pub fn parse_scenario(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    let field_err =
        |field: String, expected: String| ScenarioError::Field { path: path.to_path_buf(), field, expected };
    // Check `format` before the typed parse so a future format gets the clear message.
    let raw: serde_json::Value =
        serde_json::from_str(text).map_err(|e| field_err("(document)".into(), format!("valid JSON ({e})")))?;
    match raw.get("format").and_then(|v| v.as_str()) {
        Some(SCENARIO_FORMAT) => {}
        Some(other) => {
            return Err(field_err("format".into(), format!("\"{SCENARIO_FORMAT}\", found \"{other}\"")));
        }
        None => return Err(field_err("format".into(), format!("the string \"{SCENARIO_FORMAT}\""))),
    }
    let mut doc: FileDoc = serde_path_to_error::deserialize(raw).map_err(|e| ScenarioError::Shape {
        path: path.to_path_buf(),
        source: crate::field::ShapeError::at(e.path(), e.inner().to_string()),
    })?;
    doc.distributions = std::mem::take(&mut doc.distributions)
        .into_iter()
        .enumerate()
        .map(|(i, d)| d.binned(&format!("distributions[{i}]")))
        .collect::<Result<_, _>>()
        .map_err(|e| field_err(e.field, e.expected))?;
    validate(&doc).map_err(|e| field_err(e.field, e.expected))?;
    let data = ScenarioData {
        name: doc.name,
        description: doc.description,
        service: if doc.service.is_empty() { "unnamed".into() } else { doc.service },
        step_s: doc.step_s,
        duration_s: doc.duration_s,
        traffic: doc.traffic.map(|t| Traffic { baseline: t.baseline, canary: t.canary }),
        baseline_kind: doc.baseline_kind,
        metrics: doc
            .metrics
            .into_iter()
            .map(|m| MetricSeries {
                spec: MetricSpec { name: m.name, unit: m.unit, bad_direction: m.bad_direction },
                baseline: m.baseline,
                canary: m.canary,
            })
            .collect(),
        logs: by_time(doc.logs),
        events: doc.events,
        ml: ModelSignals { distributions: doc.distributions, labels: doc.labels },
    };
    Ok(Scenario { path: path.to_path_buf(), data, truth: doc.truth })
}

/// Lines in time order (stable: lines of one second keep the file's order),
/// so each tick's replay only adds lines after the ones before it and the
/// log miner mines just those; each cut to the live sources' line length.
fn by_time(mut lines: Vec<LogLine>) -> Vec<LogLine> {
    lines.sort_by_key(|l| l.t_s);
    for l in &mut lines {
        if l.message.len() > super::MAX_LINE_BYTES {
            l.message = super::cut(&l.message).to_string();
        }
    }
    lines
}

fn validate(doc: &FileDoc) -> Result<(), FieldError> {
    if doc.step_s == 0 {
        return Err(FieldError::of("step_s".into(), "an integer > 0, found 0".into()));
    }
    if doc.duration_s == 0 || !doc.duration_s.is_multiple_of(u64::from(doc.step_s)) {
        return Err(FieldError::of(
            "duration_s".into(),
            format!("a positive multiple of step_s ({}), found {}", doc.step_s, doc.duration_s),
        ));
    }
    if doc.name.trim().is_empty() {
        return Err(FieldError::of("name".into(), "a non-empty string".into()));
    }
    let n = (doc.duration_s / u64::from(doc.step_s)) as usize;
    let check_len = |field: String, len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(FieldError::of(field, format!("{n} samples (duration_s / step_s), found {len}")))
        }
    };
    if let Some(t) = &doc.traffic {
        check_len("traffic.baseline".into(), t.baseline.len())?;
        check_len("traffic.canary".into(), t.canary.len())?;
    }
    if doc.metrics.is_empty() {
        return Err(FieldError::of("metrics".into(), "at least one metric".into()));
    }
    // As many lines as a live log source keeps: a replay judges what a release could have seen.
    if doc.logs.len() > super::MAX_LINES {
        let expected = format!("at most {} lines, found {}", super::MAX_LINES, doc.logs.len());
        return Err(FieldError::of("logs".into(), expected));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, m) in doc.metrics.iter().enumerate() {
        if m.name.trim().is_empty() || !seen.insert(m.name.as_str()) {
            return Err(FieldError::of(format!("metrics[{i}].name"), "a non-empty name unique in the file".into()));
        }
        check_len(format!("metrics[{i}].baseline"), m.baseline.len())?;
        check_len(format!("metrics[{i}].canary"), m.canary.len())?;
        for (side, series) in [("baseline", &m.baseline), ("canary", &m.canary)] {
            if let Some(j) = series.iter().position(|v| v.is_some_and(|x| !x.is_finite())) {
                return Err(FieldError::of(format!("metrics[{i}].{side}[{j}]"), "a finite number or null".into()));
            }
        }
    }
    ModelSignals::validate(&doc.distributions, &doc.labels, n, &mut seen)?;
    if let Some(truth) = &doc.truth
        && let Some(onset) = truth.onset_s
        && onset > doc.duration_s
    {
        return Err(FieldError::of("truth.onset_s".into(), format!("at most duration_s ({})", doc.duration_s)));
    }
    Ok(())
}

/// Read and parse one scenario file.
pub fn load_scenario(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ScenarioError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
    parse_scenario(path, &text)
}

/// Load every `.json` scenario under `path` (a file or a folder, searched
/// recursively, in name order). A broken file yields its error in place and
/// the rest still load.
pub fn load_scenarios(path: &Path) -> Vec<Result<Scenario, ScenarioError>> {
    let mut files = Vec::new();
    if let Err(e) = collect_json(path, &mut files) {
        return vec![Err(e)];
    }
    files.sort();
    files.iter().map(|f| load_scenario(f)).collect()
}

fn collect_json(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), ScenarioError> {
    let read_err = |e: std::io::Error| ScenarioError::Read { path: path.to_path_buf(), reason: e.to_string() };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let p = entry.map_err(read_err)?.path();
        if p.is_dir() {
            collect_json(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
    Ok(())
}

impl Scenario {
    /// Serialise back to the file format (used by the corpus generator).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let d = &self.data;
        let doc = FileDoc {
            format: SCENARIO_FORMAT.into(),
            name: d.name.clone(),
            description: d.description.clone(),
            service: d.service.clone(),
            step_s: d.step_s,
            duration_s: d.duration_s,
            baseline_kind: d.baseline_kind,
            traffic: d.traffic.as_ref().map(|t| FileTraffic { baseline: t.baseline.clone(), canary: t.canary.clone() }),
            metrics: d
                .metrics
                .iter()
                .map(|m| FileMetric {
                    name: m.spec.name.clone(),
                    unit: m.spec.unit.clone(),
                    bad_direction: m.spec.bad_direction,
                    baseline: m.baseline.clone(),
                    canary: m.canary.clone(),
                })
                .collect(),
            logs: d.logs.clone(),
            events: d.events.clone(),
            distributions: d.ml.distributions.clone(),
            labels: d.ml.labels.clone(),
            truth: self.truth.clone(),
        };
        serde_json::to_string(&doc)
    }
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Baseline => Side::Canary,
            Side::Canary => Side::Baseline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::{Outcomes, Task};

    fn doc(extra: &str) -> String {
        format!(
            r#"{{"format":"backstop.scenario/v1","name":"t","service":"s","step_s":10,"duration_s":30,
            "metrics":[{{"name":"err","unit":"ratio","bad_direction":"up","baseline":[0.1,0.1,null],"canary":[0.2,null,0.1]}}]{extra}}}"#
        )
    }

    /// The audit's I3: a 450k-line scenario took minutes, one 100 MB line 51 s.
    /// Lines are bounded as a live source bounds them: cut at 4 KiB, and a
    /// file with more lines than a live source keeps is refused, field named.
    #[test]
    fn log_lines_are_bounded_like_a_live_sources() {
        let line = |t: u64, msg: &str| format!(r#"{{"t_s":{t},"target":"canary","level":"error","message":"{msg}"}}"#);
        let long = "x".repeat(1_000_000);
        let text = doc(&format!(r#","logs":[{},{}]"#, line(20, &long), line(10, "first")));
        let s = parse_scenario(Path::new("a.json"), &text).unwrap();
        assert_eq!(s.data.logs[0].message, "first", "in time order");
        assert_eq!(s.data.logs[1].message.len(), crate::signals::MAX_LINE_BYTES);
        let many: Vec<String> = (0..=crate::signals::MAX_LINES).map(|i| line(i as u64 % 30, "e")).collect();
        let text = doc(&format!(r#","logs":[{}]"#, many.join(",")));
        let err = parse_scenario(Path::new("big.json"), &text).unwrap_err().to_string();
        assert!(err.contains("big.json") && err.contains("`logs`") && err.contains("at most"), "{err}");
    }

    #[test]
    fn parses_minimal_without_truth() {
        let s = parse_scenario(Path::new("a.json"), &doc("")).unwrap();
        assert!(s.truth.is_none());
        assert_eq!(s.data.metrics[0].canary, vec![Some(0.2), None, Some(0.1)]);
    }

    #[test]
    fn ignores_unknown_top_level_fields() {
        let s = parse_scenario(Path::new("a.json"), &doc(r#","future_field":{"x":1}"#)).unwrap();
        assert_eq!(s.data.name, "t");
    }

    #[test]
    fn rejects_other_format_by_name() {
        let text = doc("").replace("backstop.scenario/v1", "backstop.scenario/v2");
        let err = parse_scenario(Path::new("f.json"), &text).unwrap_err().to_string();
        assert!(err.contains("f.json") && err.contains("`format`") && err.contains("v2"), "{err}");
    }

    #[test]
    fn rejects_wrong_length_naming_field() {
        let text = doc("").replace("[0.2,null,0.1]", "[0.2,null]");
        let err = parse_scenario(Path::new("f.json"), &text).unwrap_err().to_string();
        assert!(err.contains("metrics[0].canary") && err.contains("3 samples"), "{err}");
    }

    #[test]
    fn rejects_bad_direction_naming_field() {
        let text = doc("").replace("\"up\"", "\"sideways\"");
        let err = parse_scenario(Path::new("f.json"), &text).unwrap_err().to_string();
        assert!(err.contains("metrics[0].bad_direction") && err.contains("sideways"), "{err}");
    }

    #[test]
    fn rejects_zero_step() {
        let text = doc("").replace("\"step_s\":10", "\"step_s\":0");
        let err = parse_scenario(Path::new("f.json"), &text).unwrap_err().to_string();
        assert!(err.contains("`step_s`"), "{err}");
    }

    const ML: &str = r#","distributions":[{"name":"score","kind":"prediction","le":[0.5],
        "baseline":[[3,7],[2,8],null],"canary":[[5,5],null,[1,9]]}],
        "labels":[{"name":"fraud","task":"binary","delay_s":600,
        "baseline":[{"tp":1,"fp":0,"tn":3,"fn":1},null,{"tp":0,"fp":0,"tn":0,"fn":0}],
        "canary":[null,{"tp":2,"fp":1,"tn":1,"fn":0},null]},
        {"name":"eta","task":"regression","delay_s":0,"baseline":[null,null,{"n":2,"abs_error_sum":1.5,"abs_error_sq_sum":1.25}],
        "canary":[null,null,null]}]"#;

    #[test]
    fn parses_histogram_and_label_series() {
        let s = parse_scenario(Path::new("a.json"), &doc(ML)).unwrap();
        let ml = &s.data.ml;
        assert_eq!(ml.distributions[0].spec.le, vec![0.5]);
        assert_eq!(ml.distributions[0].canary[2], Some(vec![1.0, 9.0]));
        assert_eq!(ml.labels[0].spec.delay_s, 600);
        assert_eq!(ml.labels[0].canary[1], Some(Outcomes::Binary { tp: 2, fp: 1, tn: 1, fn_: 0 }));
        assert_eq!(ml.labels[1].spec.task, Task::Regression);
        let again = parse_scenario(Path::new("a.json"), &s.to_json().unwrap()).unwrap();
        assert_eq!(s, again);
    }

    #[test]
    fn raw_values_without_le_are_binned_by_the_baseline_deciles() {
        let b: Vec<String> = (0..3)
            .map(|k| format!("[{}]", (0..100).map(|i| (i + k).to_string()).collect::<Vec<_>>().join(",")))
            .collect();
        let raw = format!(
            r#","distributions":[{{"name":"amount","kind":"feature","baseline":[{}],"canary":[[1000,1001],null,[5]]}}]"#,
            b.join(",")
        );
        let s = parse_scenario(Path::new("a.json"), &doc(&raw)).unwrap();
        let d = &s.data.ml.distributions[0];
        assert_eq!(d.spec.le.len(), 9, "{:?}", d.spec.le);
        let first = d.baseline[0].as_ref().unwrap();
        assert_eq!(first.iter().sum::<f64>(), 100.0);
        assert!(first.iter().all(|c| (8.0..=12.0).contains(c)), "about a tenth in each: {first:?}");
        assert_eq!(d.canary[0].as_ref().unwrap().last(), Some(&2.0), "above every bound");
        assert_eq!(d.canary[2].as_ref().unwrap()[0], 1.0);
        // Without le, the baseline must hold values to bin by.
        let empty =
            r#","distributions":[{"name":"x","kind":"feature","baseline":[null,null,null],"canary":[[1],null,null]}]"#;
        let err = parse_scenario(Path::new("f.json"), &doc(empty)).unwrap_err().to_string();
        assert!(err.contains("distributions[0].le") && err.contains("raw values"), "{err}");
    }

    #[test]
    fn a_plain_scenario_writes_no_model_fields() {
        let s = parse_scenario(Path::new("a.json"), &doc("")).unwrap();
        let json = s.to_json().unwrap();
        assert!(!json.contains("distributions") && !json.contains("labels"), "{json}");
    }

    #[test]
    fn rejects_broken_model_series_naming_the_field() {
        let cases = [
            ("[[5,5],null,[1,9]]", "[[5,5],null,[1,9,0]]", "distributions[0].canary[2]", "2 counts"),
            ("[[5,5],null,[1,9]]", "[[5,5],null,[1,-9]]", "distributions[0].canary[2]", "counts ≥ 0"),
            ("[[5,5],null,[1,9]]", "[[5,5],null]", "distributions[0].canary", "3 samples"),
            ("\"le\":[0.5]", "\"le\":[0.5,0.5]", "distributions[0].le", "strictly increasing"),
            ("\"name\":\"eta\"", "\"name\":\"score\"", "labels[1].name", "unique"),
            (
                "[null,{\"tp\":2,\"fp\":1,\"tn\":1,\"fn\":0},null]",
                "[null,{\"n\":2,\"abs_error_sum\":1,\"abs_error_sq_sum\":1},null]",
                "labels[0].canary[1]",
                "task is binary",
            ),
            ("\"abs_error_sum\":1.5", "\"abs_error_sum\":-1.5", "labels[1].baseline[2]", "finite sums"),
            ("\"task\":\"binary\"", "\"task\":\"ranking\"", "labels[0]", "ranking"),
        ];
        for (from, to, field, expected) in cases {
            let text = doc(ML).replacen(from, to, 1);
            assert_ne!(text, doc(ML), "{from}");
            let err = parse_scenario(Path::new("f.json"), &text).unwrap_err().to_string();
            assert!(err.contains("f.json") && err.contains(field) && err.contains(expected), "{from}: {err}");
        }
    }

    #[test]
    fn round_trips_through_json() {
        let s = parse_scenario(Path::new("a.json"), &doc(r#","truth":{"bad":true,"onset_s":10}"#)).unwrap();
        let again = parse_scenario(Path::new("a.json"), &s.to_json().unwrap()).unwrap();
        assert_eq!(s, again);
    }
}

use backstop::signals::*;
use backstop::judge::*;
#[test]
fn dbg() {
    let name = std::env::var("SC").unwrap();
    let s = load_scenario(std::path::Path::new(&name)).unwrap();
    let src = ReplaySource::new(std::sync::Arc::new(s.data.clone()));
    let from: u64 = std::env::var("FROM").unwrap().parse().unwrap();
    let to: u64 = std::env::var("TO").unwrap().parse().unwrap();
    let metric = std::env::var("M").unwrap_or_default();
    for now in (from..=to).step_by(10) {
        let r = judge(&src.observe_at(now), &JudgeConfig::default());
        for f in &r.findings { if metric.is_empty() || f.metric == metric { println!("{now} {:?} {}", f.excursions, f.explanation); } }
    }
    println!("{}", s.data.description);
}

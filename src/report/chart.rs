//! One SVG chart per metric: baseline and canary over release time, the
//! decision point, the window the judge's numbers come from (shaded) and,
//! when known, the fault onset marked.

use crate::field::strip_unsafe;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::signals::MetricSeries;

const BASELINE: RGBColor = RGBColor(0x33, 0x66, 0xcc);
const CANARY: RGBColor = RGBColor(0xdd, 0x55, 0x00);
const DECISION: RGBColor = RGBColor(0xcc, 0x00, 0x00);
const ONSET: RGBColor = RGBColor(0x88, 0x88, 0x88);
const WINDOW: RGBColor = RGBColor(0xff, 0xc1, 0x07);

fn points(series: &[Option<f64>], step_s: u32) -> Vec<(f64, f64)> {
    series.iter().enumerate().filter_map(|(i, v)| v.map(|y| (((i as u64 + 1) * u64::from(step_s)) as f64, y))).collect()
}

/// What both charts plot: the two series and the axes' ranges.
struct Frame {
    baseline: Vec<(f64, f64)>,
    canary: Vec<(f64, f64)>,
    /// End of the time axis, seconds.
    x_max: f64,
    /// The value axis: every sample, padded.
    lo: f64,
    hi: f64,
}

impl Frame {
    /// `None` when `m` has no sample to draw.
    fn of(m: &MetricSeries, step_s: u32, duration_s: u64, decided_at_s: u64) -> Option<Frame> {
        let (b, c) = (points(&m.baseline, step_s), points(&m.canary, step_s));
        let ys: Vec<f64> = b.iter().chain(c.iter()).map(|p| p.1).collect();
        if ys.is_empty() {
            return None;
        }
        let (lo, hi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, &y| (a.0.min(y), a.1.max(y)));
        let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.01).max(1e-9);
        let x_max = zoomed_end(&b, &c, step_s, duration_s, decided_at_s);
        Some(Frame { baseline: b, canary: c, x_max, lo: lo - pad, hi: hi + pad })
    }

    /// The shaded judged window ending at the decision, when it has a length.
    fn judged(&self, decided_at_s: u64, window_s: Option<u64>) -> Option<Rectangle<(f64, f64)>> {
        let from = decided_at_s.saturating_sub(window_s.filter(|w| *w > 0)?) as f64;
        Some(Rectangle::new([(from, self.lo), (decided_at_s as f64, self.hi)], WINDOW.mix(0.25).filled()))
    }

    /// A vertical line across the chart at `x` seconds.
    fn vline(&self, x: f64) -> Vec<(f64, f64)> {
        vec![(x, self.lo), (x, self.hi)]
    }
}

/// An SVG document for `m`, or a short explanation when it cannot be drawn.
/// `window_s`: length of the judge's window ending at the decision, seconds.
pub fn metric_svg(
    m: &MetricSeries,
    step_s: u32,
    duration_s: u64,
    (decided_at_s, window_s): (u64, Option<u64>),
    onset_s: Option<u64>,
) -> String {
    let Some(frame) = Frame::of(m, step_s, duration_s, decided_at_s) else {
        return format!("<p>{}: no samples to draw</p>", super::text::escape(&m.spec.name));
    };
    let mut svg = String::new();
    match draw_svg(&mut svg, m, frame, (decided_at_s, window_s), onset_s) {
        Ok(()) => svg,
        Err(e) => format!("<p>{}: chart could not be drawn: {e}</p>", super::text::escape(&m.spec.name)),
    }
}

type Drawn = Result<(), Box<dyn std::error::Error>>;

fn draw_svg(
    svg: &mut String,
    m: &MetricSeries,
    frame: Frame,
    decision: (u64, Option<u64>),
    onset_s: Option<u64>,
) -> Drawn {
    let ratio = m.spec.unit == crate::signals::Unit::Ratio;
    let y_label = |v: &f64| if ratio { format!("{:.1}%", v * 100.0) } else { format!("{v:.3}") };
    let root = SVGBackend::with_string(svg, (720, 240)).into_drawing_area();
    root.fill(&WHITE)?;
    // plotters escapes markup in SVG text; control and bidi characters go here.
    let (name, unit) = (strip_unsafe(&m.spec.name, false), strip_unsafe(m.spec.unit.as_str(), false));
    let title = format!("{name} ({unit}, bad direction: {})", m.spec.bad_direction);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..frame.x_max, frame.lo..frame.hi)?;
    chart
        .configure_mesh()
        .x_desc("release time (s)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&y_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    labelled_series(&mut chart, frame, decision, onset_s)?;
    chart
        .configure_series_labels()
        // Upper left: a fault shows at the right end, where the legend would hide it.
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The judged window, the markers and the series, each with its legend entry.
fn labelled_series<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    frame: Frame,
    (decided_at_s, window_s): (u64, Option<u64>),
    onset_s: Option<u64>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let line = |color: RGBColor, width: u32| {
        move |(x, y): (i32, i32)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(width))
    };
    if let Some(shade) = frame.judged(decided_at_s, window_s) {
        chart
            .draw_series(std::iter::once(shade))?
            .label("judged window")
            .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 16, y + 4)], WINDOW.mix(0.25).filled()));
    }
    // The markers first, the series over them: a failure is never hidden behind the decision line.
    let decision = PathElement::new(frame.vline(decided_at_s as f64), DECISION.stroke_width(2));
    chart.draw_series(std::iter::once(decision))?.label("decision").legend(line(DECISION, 2));
    if let Some(on) = onset_s {
        let onset = PathElement::new(frame.vline(on as f64), ONSET.stroke_width(1));
        chart.draw_series(std::iter::once(onset))?.label("fault onset").legend(line(ONSET, 1));
    }
    chart
        .draw_series(LineSeries::new(frame.baseline, BASELINE.stroke_width(2)))?
        .label("baseline")
        .legend(line(BASELINE, 2));
    chart.draw_series(LineSeries::new(frame.canary, CANARY.stroke_width(2)))?.label("canary").legend(line(CANARY, 2));
    Ok(())
}

/// Where a chart's time axis ends: just past the last sample or the
/// decision (whichever is later), not the whole window — a release decided at
/// 640 s of 1800 s would otherwise leave most of the chart empty.
fn zoomed_end(b: &[(f64, f64)], c: &[(f64, f64)], step_s: u32, duration_s: u64, decided_at_s: u64) -> f64 {
    let last = b.iter().chain(c).map(|p| p.0).fold(decided_at_s as f64, f64::max);
    let step = f64::from(step_s.max(1));
    (last + (last * 0.05).max(step)).min(duration_s.max(u64::from(step_s)) as f64)
}

/// A PNG of `m` for chat: baseline (blue), canary (orange), the judged
/// window (shaded) and the decision (red line), without text — no font is
/// shipped, so the caption travels as the file's title. `None` when there
/// is nothing to draw.
pub fn metric_png(
    m: &MetricSeries,
    step_s: u32,
    duration_s: u64,
    (decided_at_s, window_s): (u64, Option<u64>),
) -> Option<Vec<u8>> {
    const W: u32 = 720;
    const H: u32 = 240;
    let frame = Frame::of(m, step_s, duration_s, decided_at_s)?;
    let mut rgb = vec![0u8; (W * H * 3) as usize];
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::with_buffer(&mut rgb, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root).margin(12).build_cartesian_2d(0f64..frame.x_max, frame.lo..frame.hi)?;
        if let Some(shade) = frame.judged(decided_at_s, window_s) {
            chart.draw_series(std::iter::once(shade))?;
        }
        let decision = PathElement::new(frame.vline(decided_at_s as f64), DECISION.stroke_width(2));
        chart.draw_series(LineSeries::new(frame.baseline, BASELINE.stroke_width(2)))?;
        chart.draw_series(LineSeries::new(frame.canary, CANARY.stroke_width(2)))?;
        chart.draw_series(std::iter::once(decision))?;
        root.present()?;
        Ok(())
    })();
    drawn.ok()?;
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, W, H);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().ok()?;
    writer.write_image_data(&rgb).ok()?;
    writer.finish().ok()?;
    Some(out)
}

//! Charts of a run, each written as PNG and SVG with plotters: latency CDFs
//! (TTFT, TPOT, ITL, E2EL; a run without streaming has only E2EL, the other
//! panels say "not measured") and the timeline (output tokens/s and requests in
//! flight, per second). Text uses a TrueType font found on the system
//! (`CANDELA_FONT` overrides the search).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::metrics::{BenchmarkMetrics, RequestOutput};
use crate::error::{Error, Result};

const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Register a system font as plotters' "sans-serif" once per process.
fn ensure_font() -> Result<()> {
    static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let paths: Vec<PathBuf> = std::env::var_os("CANDELA_FONT")
            .map(|p| vec![PathBuf::from(p)])
            .unwrap_or_else(|| FONT_CANDIDATES.iter().map(PathBuf::from).collect());
        for p in &paths {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "no TrueType font for chart text (looked for {}); install fonts-dejavu-core or set CANDELA_FONT=/path/to/font.ttf",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    })
    .clone()
    .map_err(|message| Error::Output { path: "charts".into(), message })
}

/// Write `<stem>.latency-cdf.{png,svg}` and `<stem>.timeline.{png,svg}`; returns
/// the paths. `stream`: whether the run measured TTFT, TPOT and ITL.
pub fn write_charts(
    stem: &Path,
    title: &str,
    m: &BenchmarkMetrics,
    outputs: &[RequestOutput],
    stream: bool,
) -> Result<Vec<PathBuf>> {
    ensure_font()?;
    let ok: Vec<&RequestOutput> = outputs.iter().filter(|o| o.success).collect();
    let ms = |v: &mut Vec<f64>| v.iter_mut().for_each(|x| *x *= 1000.0);
    let mut ttft: Vec<f64> = ok.iter().map(|o| o.ttft).collect();
    let mut tpot: Vec<f64> = m.all_tpots.iter().copied().filter(|&t| t > 0.0).collect();
    let mut itl: Vec<f64> = ok.iter().flat_map(|o| o.itl.iter().copied()).collect();
    let mut e2el: Vec<f64> = ok.iter().map(|o| o.latency).collect();
    for v in [&mut ttft, &mut tpot, &mut itl, &mut e2el] {
        ms(v);
    }
    let cdfs = if stream {
        [
            ("TTFT (ms)", ttft),
            ("TPOT (ms)", tpot),
            ("ITL (ms)", itl),
            ("E2EL (ms)", e2el),
        ]
    } else {
        [
            ("TTFT: not measured (--no-stream)", vec![]),
            ("TPOT: not measured (--no-stream)", vec![]),
            ("ITL: not measured (--no-stream)", vec![]),
            ("E2EL (ms)", e2el),
        ]
    };
    let mut written = Vec::new();
    let with_suffix = |suffix: &str| {
        let mut s = stem.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    let cdf_png = with_suffix(".latency-cdf.png");
    let cdf_svg = with_suffix(".latency-cdf.svg");
    let tl_png = with_suffix(".timeline.png");
    let tl_svg = with_suffix(".timeline.svg");
    let out_err = |p: &Path, e: &dyn std::fmt::Display| Error::Output {
        path: p.display().to_string(),
        message: e.to_string(),
    };

    let size = (1200, 800);
    draw_cdfs(
        BitMapBackend::new(&cdf_png, size).into_drawing_area(),
        title,
        &cdfs,
    )
    .map_err(|e| out_err(&cdf_png, &e))?;
    draw_cdfs(
        SVGBackend::new(&cdf_svg, size).into_drawing_area(),
        title,
        &cdfs,
    )
    .map_err(|e| out_err(&cdf_svg, &e))?;
    let tokens_caption = if stream {
        "Output tokens/s"
    } else {
        "Output tokens/s, counted when each whole answer arrives (--no-stream)"
    };
    draw_timeline(
        BitMapBackend::new(&tl_png, size).into_drawing_area(),
        title,
        m,
        tokens_caption,
    )
    .map_err(|e| out_err(&tl_png, &e))?;
    draw_timeline(
        SVGBackend::new(&tl_svg, size).into_drawing_area(),
        title,
        m,
        tokens_caption,
    )
    .map_err(|e| out_err(&tl_svg, &e))?;
    written.extend([cdf_png, cdf_svg, tl_png, tl_svg]);
    Ok(written)
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw_cdfs<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    cdfs: &[(&str, Vec<f64>)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(&format!("Latency CDFs — {title}"), ("sans-serif", 24))?;
    for ((name, values), area) in cdfs.iter().zip(root.split_evenly((2, 2))) {
        let mut v = values.clone();
        v.sort_by(f64::total_cmp);
        let max = v.last().copied().unwrap_or(1.0).max(1e-3) * 1.05;
        let mut chart = ChartBuilder::on(&area)
            .caption(*name, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..max, 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("ms")
            .y_desc("fraction ≤ x")
            .draw()?;
        let n = v.len() as f64;
        let points: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .map(|(i, &x)| (x, (i + 1) as f64 / n))
            .collect();
        chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?;
        if v.is_empty() {
            chart.draw_series(std::iter::once(Text::new(
                "no samples",
                (max * 0.4, 0.5),
                ("sans-serif", 16),
            )))?;
        }
    }
    root.present()?;
    Ok(())
}

fn draw_timeline<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    m: &BenchmarkMetrics,
    tokens_caption: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(&format!("Over time — {title}"), ("sans-serif", 24))?;
    let series = [
        (tokens_caption, &m.timeline.tokens_per_second, RED),
        (
            "Requests in flight (mean over each second)",
            &m.timeline.concurrent_requests,
            BLUE,
        ),
    ];
    for ((name, values, color), area) in series.into_iter().zip(root.split_evenly((2, 1))) {
        let secs = values.len().max(1) as f64;
        let max = values.iter().copied().fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .caption(name, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..secs, 0.0..max)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .draw()?;
        let points: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, &y)| (i as f64 + 0.5, y))
            .collect();
        chart.draw_series(
            AreaSeries::new(points.clone(), 0.0, color.mix(0.2))
                .border_style(color.stroke_width(2)),
        )?;
    }
    root.present()?;
    Ok(())
}

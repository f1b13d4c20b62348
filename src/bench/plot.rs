//! The startup chart: median latency (log scale) against the add-on's size of content (log
//! scale), one line per method, drawn as SVG with `plotters` (text is left to the viewer's
//! fonts, so no font files are needed).

use std::path::Path;

use plotters::prelude::*;

use super::startup::{ms, Method, StartupReport};
use super::BenchError;

/// The chart's size in pixels.
pub const SIZE: (u32, u32) = (860, 540);

/// The target for addonfs attach + first byte (issue 5), drawn as a dashed line.
pub const TARGET_MS: f64 = 10.0;

/// The line colour of a method.
fn color(method: Method) -> RGBColor {
    match method {
        Method::Extract => RGBColor(214, 39, 40),
        Method::Attach => RGBColor(31, 119, 180),
        Method::AttachLib => RGBColor(44, 160, 44),
        Method::AddonfsMount => RGBColor(23, 190, 207),
        Method::Ratarmount => RGBColor(255, 127, 14),
        Method::Archivemount => RGBColor(148, 103, 189),
        Method::Lazy => RGBColor(0, 0, 0),
        Method::LazyLatency => RGBColor(127, 127, 127),
        Method::DownloadServe => RGBColor(140, 86, 75),
        Method::DownloadServeLatency => RGBColor(196, 156, 148),
        Method::DownloadExtract => RGBColor(227, 119, 194),
        Method::DownloadExtractLatency => RGBColor(188, 189, 34),
    }
}

/// Powers of ten around `[lo, hi]`.
fn decades(lo: f64, hi: f64) -> (f64, f64) {
    (10f64.powf(lo.max(1e-9).log10().floor()), 10f64.powf(hi.max(1e-9).log10().ceil()))
}

/// A size in MiB for an axis label.
fn size_label(mib: f64) -> String {
    if mib >= 1024.0 {
        format!("{} GiB", trim(mib / 1024.0))
    } else {
        format!("{} MiB", trim(mib))
    }
}

/// A latency in milliseconds for an axis label.
fn latency_label(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", trim(ms / 1000.0))
    } else {
        format!("{} ms", trim(ms))
    }
}

fn trim(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Renders the chart of `report` as an SVG document.
pub fn render_svg(report: &StartupReport) -> Result<String, String> {
    let addons = report.addons();
    let mib = |bytes: u64| (bytes.max(1) as f64) / f64::from(1 << 20);
    let xs: Vec<f64> = addons.iter().map(|a| mib(a.content_bytes)).collect();
    let ys: Vec<f64> = report.measurements.iter().map(|m| ms(m.median()).max(1e-3)).collect();
    let fold = |v: &[f64], f: fn(f64, f64) -> f64, init: f64| v.iter().copied().fold(init, f);
    let (x_lo, x_hi) = (fold(&xs, f64::min, f64::MAX), fold(&xs, f64::max, 0.0));
    let (y_lo, y_hi) = decades(fold(&ys, f64::min, f64::MAX), fold(&ys, f64::max, 0.0));
    let (x_lo, x_hi) = if xs.is_empty() { (0.1, 10.0) } else { (x_lo / 1.5, x_hi * 1.5) };
    let (y_lo, y_hi) = if ys.is_empty() { (0.1, 10.0) } else { (y_lo, y_hi) };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Workload start to first byte (median, cold page cache)", ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("add-on size (content)")
            .y_desc("latency")
            .x_label_formatter(&|v| size_label(*v))
            .y_label_formatter(&|v| latency_label(*v))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        if (y_lo..=y_hi).contains(&TARGET_MS) {
            let grey = RGBColor(120, 120, 120).stroke_width(1);
            let line = [(x_lo, TARGET_MS), (x_hi, TARGET_MS)];
            chart
                .draw_series(DashedLineSeries::new(line, 6, 4, grey))
                .map_err(|e| e.to_string())?
                .label("target for attach: 10 ms")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
        }
        for method in report.methods() {
            let points: Vec<(f64, f64)> = addons
                .iter()
                .filter_map(|a| report.get(&a.label, method))
                .map(|m| (mib(m.addon.content_bytes), ms(m.median()).max(1e-3)))
                .collect();
            let style = color(method).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style))
                .map_err(|e| e.to_string())?
                .label(method.title())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 4, color(method).filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Writes the chart of `report` to `path` as SVG.
pub fn write_svg(report: &StartupReport, path: &Path) -> Result<(), BenchError> {
    let svg = render_svg(report)
        .map_err(|message| BenchError::Plot { path: path.to_path_buf(), message })?;
    std::fs::write(path, svg).map_err(|e| BenchError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::addon::BuiltAddon;
    use crate::bench::startup::Measurement;
    use std::time::Duration;

    #[test]
    fn the_chart_has_one_line_and_one_legend_entry_per_method() {
        let mut report = StartupReport::default();
        for (label, size) in [("1M", 1u64 << 20), ("1G", 1 << 30)] {
            let addon = BuiltAddon {
                label: label.to_string(),
                target_bytes: size,
                source: "/usr".into(),
                dir: "/w".into(),
                files: 1,
                content_bytes: size,
                tarball_bytes: size / 2,
                chosen: "usr/x".to_string(),
                chosen_depth: 2,
                name: "bench".to_string(),
                paths: vec!["/usr/x".to_string()],
            };
            for (method, t) in [(Method::Extract, size >> 10), (Method::Attach, 3)] {
                let times = vec![Duration::from_micros(t)];
                report.measurements.push(Measurement {
                    addon: addon.clone(),
                    method,
                    times,
                    fetched: vec![],
                });
            }
        }
        let svg = render_svg(&report).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("tar -xzf (extract)") && svg.contains("addonfs attach"));
        assert!(svg.contains("target for attach: 10 ms"));
        for method in [Method::Extract, Method::Attach] {
            let RGBColor(r, g, b) = color(method);
            let stroke =
                format!("<polyline fill=\"none\" opacity=\"1\" stroke=\"#{r:02X}{g:02X}{b:02X}\"");
            assert_eq!(svg.matches(&stroke).count(), 2, "{method:?}: its line and its legend mark");
        }
        assert_eq!(svg.matches("<circle").count(), 4);
        let texts: Vec<&str> =
            svg.split("</text>").filter_map(|t| t.rsplit('>').next()).map(str::trim).collect();
        for tick in ["1 MiB", "100 MiB", "1 ms", "1 s"] {
            assert!(texts.contains(&tick), "tick {tick} in {texts:?}");
        }
    }
}

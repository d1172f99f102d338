//! Charts of a sweep's results, drawn with plotters as SVG and PNG (the PNG's text set in
//! the embedded DejaVu Sans, so no system fonts are needed): one line per group, coloured
//! by one parameter and dashed by another, axis titles in words with units, log axes where
//! the data spans decades, tidy tick labels, and an optional marker line at one x with each
//! line's value written beside it.

use crate::serving::output::{temp_beside, write_atomic};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::path::Path;

pub struct Series {
    pub label: String,
    /// Index into the palette (one per value of the colour parameter).
    pub colour: usize,
    /// Index into the dash patterns (one per value of the dash parameter).
    pub dash: usize,
    pub points: Vec<(f64, f64)>,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub x_title: &'a str,
    pub y_title: &'a str,
    pub series: &'a [Series],
    /// A vertical marker at this x, each series' value there written on it.
    pub at_x: Option<f64>,
}

/// The plot's own area; the legend's column is added to its right.
const PLOT_SIZE: (u32, u32) = (710, 560);
/// Least width of the legend column right of the plot.
const LEGEND_W: u32 = 250;
/// A legend row's height and the room above the first (px).
const ROW_H: u32 = 20;
const LEGEND_TOP: u32 = 48;
/// A legend label's character width at its 13 px font, with room to spare (px).
const CHAR_W: u32 = 7;
/// Where a legend row's label starts, right of its line sample, and the margin after it (px).
const LABEL_X: u32 = 52;
const LABEL_MARGIN: u32 = 8;

/// The image's size: the plot's, with a legend column wide and tall enough for every
/// label (a sweep with many settings gets a taller image, never a legend cut off).
fn size(chart: &Chart) -> (u32, u32) {
    let longest = chart.series.iter().map(|s| s.label.chars().count()).max();
    let legend_w = LEGEND_W.max(LABEL_X + LABEL_MARGIN + CHAR_W * longest.unwrap_or(0) as u32);
    let legend_h = LEGEND_TOP + ROW_H * chart.series.len() as u32 + ROW_H;
    (PLOT_SIZE.0 + legend_w, PLOT_SIZE.1.max(legend_h))
}

/// Tableau 10: distinct in print and for the common colour-vision deficiencies.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// (dash, gap) in pixels; (0, 0) is a solid line.
const DASHES: [(u32, u32); 4] = [(0, 0), (10, 5), (3, 4), (18, 6)];
const FONT: &str = "sans-serif";
/// Height of one line of marker labels, in pixels.
const LABEL_H: i32 = 14;

/// Where the data spans at least this ratio, its axis is logarithmic.
const LOG_SPAN: f64 = 30.0;

/// Words for a summary column, with its unit: what an axis title says.
pub fn axis_title(column: &str) -> String {
    let name = column.strip_prefix("param_").unwrap_or(column);
    let known = [
        ("output_tok_s_per_gpu", "Output tokens/s per GPU"),
        (
            "output_tok_s_per_gpu_rate_matched",
            "Output tokens/s per GPU (prefill rate-matched)",
        ),
        (
            "output_tok_s_per_decode_gpu",
            "Output tokens/s per decode GPU",
        ),
        ("output_tok_s", "Output tokens/s"),
        ("tok_s_per_user", "Output tokens/s per user"),
        ("users_per_gpu", "Users per decode GPU"),
        ("users", "Users"),
        ("rate", "Request rate (requests/s)"),
        ("rate_per_s", "Request rate (requests/s)"),
        ("request_throughput_per_s", "Requests/s"),
        ("concurrency", "Concurrent requests"),
    ];
    if let Some((_, words)) = known.iter().find(|(c, _)| *c == name) {
        return (*words).to_owned();
    }
    // ttft_ms_p99 -> "TTFT p99 (ms)"; step_moe_ms_mean -> "Step moe mean (ms)".
    let mut unit = None;
    let mut words: Vec<String> = Vec::new();
    for part in name.split('_') {
        match part {
            "ms" | "s" | "gb" | "gib" => {
                unit = Some(part.replace("gib", "GiB").replace("gb", "GB"))
            }
            "ttft" | "tpot" | "itl" | "e2e" | "kv" | "ep" | "eplb" | "mtp" => {
                words.push(part.to_uppercase())
            }
            p => words.push(p.to_owned()),
        }
    }
    let mut text = words.join(" ");
    if let Some(first) = text.get(..1) {
        text = first.to_uppercase() + &text[1..];
    }
    match unit {
        Some(u) => format!("{text} ({u})"),
        None => text,
    }
}

/// A tick label: at most four significant digits, no float noise, thousands grouped.
pub fn tidy(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() {
            "0".into()
        } else {
            v.to_string()
        };
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let text = format!("{v:.digits$}");
    let text = match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_owned(),
        false => text,
    };
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, int) = int.strip_prefix('-').map_or(("", int), |i| ("-", i));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 && int.len() > 4 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        "" => format!("{sign}{grouped}"),
        f => format!("{sign}{grouped}.{f}"),
    }
}

/// Writes `chart` as `stem.svg` and `stem.png` (each atomically); returns their paths.
pub fn write(chart: &Chart, stem: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    register_font();
    let svg_file = stem.with_extension("svg");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size(chart)).into_drawing_area();
        draw(&root, chart)?;
        root.present().map_err(|e| e.to_string())?;
    }
    write_atomic(&svg_file, svg.as_bytes()).map_err(|e| e.to_string())?;
    let png_file = stem.with_extension("png");
    // The bitmap backend writes a file by name (its format from the ending).
    let tmp = temp_beside(&png_file, ".png").map_err(|e| e.to_string())?;
    {
        let root = BitMapBackend::new(tmp.path(), size(chart)).into_drawing_area();
        draw(&root, chart)?;
        root.present().map_err(|e| e.to_string())?;
    }
    tmp.persist(&png_file)
        .map_err(|e| format!("{}: {}", png_file.display(), e.error))?;
    Ok(vec![svg_file, png_file])
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the dejavu crate.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// The data's range on one axis, and whether it spans decades (then drawn on a log axis).
fn range(values: impl Iterator<Item = f64>) -> (f64, f64, bool) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        return (0.0, 1.0, false);
    }
    if lo > 0.0 && hi / lo >= LOG_SPAN {
        return (lo / 1.3, hi * 1.3, true);
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 0.05).max(1e-9);
    let lo = if lo >= 0.0 { 0.0 } else { lo - pad };
    (lo, hi + pad, false)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (plot, legend) = root.split_horizontally(PLOT_SIZE.0);
    // A tall image keeps the plot its own height, the legend running on below.
    let (plot, _) = plot.split_vertically(PLOT_SIZE.1);
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1, log_x) = range(points().map(|p| p.0));
    let (y0, y1, log_y) = range(points().map(|p| p.1));
    let lin = |a: f64, b: f64| -> RangedCoordf64 { (a..b).into() };
    match (log_x, log_y) {
        (false, false) => draw_in(&plot, chart, lin(x0, x1), lin(y0, y1)),
        (true, false) => draw_in(&plot, chart, (x0..x1).log_scale(), lin(y0, y1)),
        (false, true) => draw_in(&plot, chart, lin(x0, x1), (y0..y1).log_scale()),
        (true, true) => draw_in(&plot, chart, (x0..x1).log_scale(), (y0..y1).log_scale()),
    }?;
    draw_legend(&legend, chart).map_err(e)
}

fn draw_in<DB, X, Y>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart,
    x: X,
    y: Y,
) -> Result<(), String>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut c = ChartBuilder::on(area)
        .caption(chart.title, (FONT, 20))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc(chart.x_title)
        .y_desc(chart.y_title)
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 13))
        .x_label_formatter(&|v| tidy(*v))
        .y_label_formatter(&|v| tidy(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(e)?;
    for s in chart.series {
        let style = PALETTE[s.colour % PALETTE.len()].stroke_width(2);
        match DASHES[s.dash % DASHES.len()] {
            (0, 0) => c
                .draw_series(LineSeries::new(s.points.iter().copied(), style))
                .map_err(e)?,
            (dash, gap) => c
                .draw_series(DashedLineSeries::new(
                    s.points.iter().copied(),
                    dash,
                    gap,
                    style,
                ))
                .map_err(e)?,
        };
        c.draw_series(
            s.points
                .iter()
                .map(|&p| Circle::new(p, 3, PALETTE[s.colour % PALETTE.len()].filled())),
        )
        .map_err(e)?;
    }
    if let Some(at) = chart.at_x {
        let (y_lo, y_hi) = (c.y_range().start, c.y_range().end);
        c.draw_series(DashedLineSeries::new(
            [(at, y_lo), (at, y_hi)],
            6,
            4,
            BLACK.stroke_width(1),
        ))
        .map_err(e)?;
        c.draw_series(std::iter::once(Text::new(
            format!("x = {}", tidy(at)),
            (at, y_hi),
            (FONT, 13).into_font().color(&BLACK),
        )))
        .map_err(e)?;
        // Each line's value, beside the marker in the line's colour; labels are pushed
        // apart so that close values stay readable.
        let mut labels: Vec<((i32, i32), String, RGBColor)> = Vec::new();
        for s in chart.series {
            if let Some(v) = crate::sweep::frontier::y_at(&s.points, at) {
                let colour = PALETTE[s.colour % PALETTE.len()];
                c.draw_series(std::iter::once(Circle::new((at, v), 4, colour.filled())))
                    .map_err(e)?;
                labels.push((c.backend_coord(&(at, v)), tidy(v), colour));
            }
        }
        labels.sort_by_key(|l| l.0.1);
        let mut next_free = i32::MIN;
        for ((px, py), text, colour) in labels {
            let y = (py - 7).max(next_free);
            next_free = y + LABEL_H;
            let font = (FONT, 12).into_font().color(&colour);
            // On a white ground, so the lines that cross the marker do not cross the text.
            let (w, h) = area.estimate_text_size(&text, &font).map_err(e)?;
            let (x0, y0) = (px + 6, y - 1);
            area.draw(&Rectangle::new(
                [(x0, y0), (x0 + w as i32 + 4, y0 + h as i32 + 2)],
                WHITE.filled(),
            ))
            .map_err(e)?;
            area.draw(&Text::new(text, (px + 8, y), font)).map_err(e)?;
        }
    }
    Ok(())
}

/// The legend, in its own column beside the plot so it never covers a line.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (i, s) in chart.series.iter().enumerate() {
        let y = (LEGEND_TOP + i as u32 * ROW_H) as i32;
        let colour = PALETTE[s.colour % PALETTE.len()];
        let style = colour.stroke_width(2);
        let line = [(8, y), (44, y)];
        match DASHES[s.dash % DASHES.len()] {
            (0, 0) => area.draw(&PathElement::new(line, style))?,
            (dash, gap) => area.draw(&DashedPathElement::new(line, dash, gap, style))?,
        }
        area.draw(&Text::new(
            s.label.clone(),
            (LABEL_X as i32, y - 7),
            (FONT, 13).into_font().color(&BLACK),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_tidy() {
        assert_eq!(tidy(0.15000000000000002), "0.15");
        assert_eq!(tidy(12345.678), "12,346");
        assert_eq!(tidy(1000.0), "1000");
        assert_eq!(tidy(2.5e-3), "0.0025");
        assert_eq!(tidy(-7.0), "-7");
        assert_eq!(tidy(0.0), "0");
    }

    #[test]
    fn axis_titles_are_words_with_units() {
        assert_eq!(
            axis_title("output_tok_s_per_gpu"),
            "Output tokens/s per GPU"
        );
        assert_eq!(axis_title("ttft_ms_p99"), "TTFT p99 (ms)");
        assert_eq!(axis_title("param_users_per_gpu"), "Users per decode GPU");
        assert_eq!(axis_title("step_moe_ms_mean"), "Step moe mean (ms)");
    }

    #[test]
    fn data_spanning_decades_gets_a_log_axis() {
        assert!(range([1.0, 10.0, 1000.0].into_iter()).2);
        assert!(!range([100.0, 150.0, 300.0].into_iter()).2);
        assert_eq!(range(std::iter::empty()), (0.0, 1.0, false));
    }

    #[test]
    fn a_chart_is_written_as_svg_and_png_with_a_line_and_legend_per_series() {
        let dir = tempfile::tempdir().unwrap();
        let series = [
            Series {
                label: "ep=8 eplb=none".into(),
                colour: 0,
                dash: 0,
                points: vec![(10.0, 100.0), (50.0, 60.0), (100.0, 20.0)],
            },
            Series {
                label: "ep=32 eplb=static".into(),
                colour: 1,
                dash: 1,
                points: vec![(10.0, 300.0), (60.0, 150.0), (120.0, 40.0)],
            },
        ];
        let files = write(
            &Chart {
                title: "t",
                x_title: "Output tokens/s per user",
                y_title: "Output tokens/s per GPU",
                series: &series,
                at_x: Some(40.0),
            },
            &dir.path().join("frontier"),
        )
        .unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(svg.contains("ep=32 eplb=static") && svg.contains("Output tokens/s per GPU"));
        assert!(svg.contains("stroke-dasharray") || svg.matches("<polyline").count() > 2);
        // Each series' value at the marker is written on the chart.
        assert!(svg.contains("\n70\n</text>"), "{svg}");
        assert!(svg.contains("\n210\n</text>"), "{svg}");
        let png = std::fs::read(&files[1]).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}

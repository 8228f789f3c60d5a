//! Line charts of the report as standalone SVG: axes on a linear, log10 or
//! nines scale, a legend, and one colour and marker shape per line. The SVG
//! uses only basic shapes and text in system fonts, with no scripts or
//! external files, because GitHub shows SVG files as images, which can load
//! neither.

use crate::markdown::{format_number, group_decimal, group_thousands};
use crate::report::{Chart, Scale};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const MARGIN: f64 = 16.0;
const FONT_SIZE: f64 = 12.0;
const TITLE_FONT_SIZE: f64 = 16.0;
const TITLE_LINE_HEIGHT: f64 = 20.0;
const LEGEND_ROW_HEIGHT: f64 = 18.0;
/// Length of the line drawn before each legend label.
const LEGEND_SWATCH: f64 = 22.0;
const TICK_LENGTH: f64 = 5.0;
const MARKER_RADIUS: f64 = 3.5;
/// Lines with more points than this are drawn without markers, which would
/// merge into a thick smear.
const MAX_MARKED_POINTS: usize = 60;
/// Approximate number of ticks on a linear axis. The count varies because
/// the step is rounded to 1, 2 or 5 times a power of ten.
const LINEAR_TICKS_X: f64 = 7.0;
const LINEAR_TICKS_Y: f64 = 5.0;
/// Maximum number of labels on a log10 or nines axis. Beyond it only every
/// n-th tick is labelled.
const MAX_DECADE_LABELS: usize = 9;
/// Tolerance for positions that land next to a whole number, such as
/// `log10(1000) = 2.9999999999999996`.
const WHOLE_NUMBER_TOLERANCE: f64 = 1e-9;

const FONT_FAMILY: &str = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif";
const TEXT_COLOUR: &str = "#222222";
const AXIS_COLOUR: &str = "#555555";
const GRID_COLOUR: &str = "#e3e3e3";
const MINOR_GRID_COLOUR: &str = "#f1f1f1";

/// The Okabe-Ito palette, which stays distinguishable with the common kinds
/// of colour blindness. Its yellow comes last because it is faint on white.
const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

/// Renders the chart as a complete SVG document of 720 × 420 px.
///
/// Points that the scale cannot show are skipped and break their line: NaN
/// or infinite values, non-positive values on a log10 axis, and, when no
/// finite percentile exists on the same axis, percentiles of 100 on a nines
/// axis.
pub fn render_svg(chart: &Chart) -> String {
    let lines = project_lines(chart);
    let x_positions: Vec<f64> = lines
        .iter()
        .flatten()
        .flatten()
        .map(|point| point.position[0])
        .collect();
    let y_positions: Vec<f64> = lines
        .iter()
        .flatten()
        .flatten()
        .map(|point| point.position[1])
        .collect();
    let x_axis = Axis::fit(chart.x_scale, &x_positions, LINEAR_TICKS_X, false);
    // A linear y axis includes zero, so that the height of a line shows its
    // size and small differences do not look large.
    let y_axis = Axis::fit(chart.y_scale, &y_positions, LINEAR_TICKS_Y, true);
    let layout = Layout::new(chart, &lines, x_axis.as_ref(), y_axis.as_ref());

    let mut svg = String::new();
    svg.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"{FONT_FAMILY}\" font-size=\"{FONT_SIZE}\" \
         fill=\"{TEXT_COLOUR}\" role=\"img\">\n"
    ));
    svg.push_str(&format!("<title>{}</title>\n", escape_xml(&chart.title)));
    // Without a background the chart would be dark text on a dark page in
    // viewers with a dark theme.
    svg.push_str("<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n");

    draw_title(&mut svg, &layout);
    draw_legend(&mut svg, &layout);
    match (&x_axis, &y_axis) {
        (Some(x_axis), Some(y_axis)) => {
            draw_grid(&mut svg, &layout, x_axis, y_axis);
            draw_axes(&mut svg, chart, &layout, x_axis, y_axis);
            let frame = Frame {
                layout: &layout,
                x_axis,
                y_axis,
            };
            for (index, line) in lines.iter().enumerate() {
                let label = chart
                    .lines
                    .get(index)
                    .map_or("", |line| line.label.as_str());
                draw_line(&mut svg, &frame, index, label, line);
            }
        }
        _ => draw_no_data(&mut svg, chart, &layout),
    }
    svg.push_str("</svg>\n");
    svg
}

/// A point as given, and its place along each axis after the scale.
#[derive(Debug, Clone, Copy)]
struct PlotPoint {
    value: [f64; 2],
    position: [f64; 2],
}

/// Maps every point onto both axes, with `None` for points the scales cannot
/// show, so that a line breaks there instead of bridging the gap.
fn project_lines(chart: &Chart) -> Vec<Vec<Option<PlotPoint>>> {
    let mut lines: Vec<Vec<Option<PlotPoint>>> = chart
        .lines
        .iter()
        .map(|line| {
            line.points
                .iter()
                .map(|&[x, y]| {
                    let position = [
                        scale_position(chart.x_scale, x)?,
                        scale_position(chart.y_scale, y)?,
                    ];
                    Some(PlotPoint {
                        value: [x, y],
                        position,
                    })
                })
                .collect()
        })
        .collect();
    clamp_infinite_positions(&mut lines, 0);
    clamp_infinite_positions(&mut lines, 1);
    lines
}

/// Returns where `value` sits along an axis of `scale`, or `None` when the
/// scale cannot show it. A percentile of 100 or more on a nines axis is
/// infinitely far out and comes back as infinity for the caller to clamp.
fn scale_position(scale: Scale, value: f64) -> Option<f64> {
    if !value.is_finite() {
        return None;
    }
    match scale {
        Scale::Linear => Some(value),
        Scale::Log10 => (value > 0.0).then(|| value.log10()),
        Scale::Nines if value >= 100.0 => Some(f64::INFINITY),
        Scale::Nines => Some(nines(value)),
    }
}

/// Counts the nines of a percentile: 90 is 1, 99 is 2 and 99.9 is 3.
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).log10()
}

/// Moves infinite positions on one axis to the largest finite position on
/// it, so that the maximum (percentile 100) lands at the end of the axis.
/// Without any finite position there is no end, and the points are dropped.
fn clamp_infinite_positions(lines: &mut [Vec<Option<PlotPoint>>], axis: usize) {
    let largest = lines
        .iter()
        .flatten()
        .flatten()
        .map(|point| point.position[axis])
        .filter(|position| position.is_finite())
        .reduce(f64::max);
    for slot in lines.iter_mut().flatten() {
        let Some(point) = slot else { continue };
        if point.position[axis].is_finite() {
            continue;
        }
        match largest {
            Some(largest) => point.position[axis] = largest,
            None => *slot = None,
        }
    }
}

#[derive(Debug)]
struct Tick {
    position: f64,
    /// Empty for ticks that are drawn but left unlabelled for lack of room.
    label: String,
}

/// The span of one axis, in positions after the scale, and its ticks.
#[derive(Debug)]
struct Axis {
    low: f64,
    high: f64,
    ticks: Vec<Tick>,
    /// Gridlines without labels between the ticks, such as 2 to 9 times each
    /// power of ten on a log10 axis.
    minor: Vec<f64>,
}

impl Axis {
    /// Fits an axis around the positions, or returns `None` when there are
    /// none. Every finite position lies inside the result.
    fn fit(scale: Scale, positions: &[f64], target_ticks: f64, include_zero: bool) -> Option<Axis> {
        let low = positions.iter().copied().reduce(f64::min)?;
        let high = positions.iter().copied().reduce(f64::max)?;
        Some(match scale {
            Scale::Linear => linear_axis(low, high, target_ticks, include_zero),
            Scale::Log10 => decade_axis(low, high, power_of_ten_label, true),
            Scale::Nines => decade_axis(low, high, nines_label, false),
        })
    }

    /// Returns how far along the axis a position is, from 0 to 1.
    fn fraction(&self, position: f64) -> f64 {
        // Halving first keeps the differences finite near f64::MAX.
        let fraction = (position / 2.0 - self.low / 2.0) / (self.high / 2.0 - self.low / 2.0);
        if fraction.is_finite() { fraction } else { 0.5 }
    }
}

fn linear_axis(low: f64, high: f64, target_ticks: f64, include_zero: bool) -> Axis {
    let (mut low, mut high) = if include_zero {
        (low.min(0.0), high.max(0.0))
    } else {
        (low, high)
    };
    if low == high {
        if low == 0.0 {
            (low, high) = if include_zero {
                (0.0, 1.0)
            } else {
                (-1.0, 1.0)
            };
        } else {
            let padding = low.abs() / 2.0;
            (low, high) = (
                (low - padding).max(-f64::MAX),
                (high + padding).min(f64::MAX),
            );
        }
    }

    let step = nice_step((high / 2.0 - low / 2.0) / (target_ticks / 2.0));
    let first = (low / step + WHOLE_NUMBER_TOLERANCE).floor();
    let last = (high / step - WHOLE_NUMBER_TOLERANCE).ceil();
    let nice_range =
        step.is_finite() && step > 0.0 && (first * step).is_finite() && (last * step).is_finite();
    if !nice_range || last - first > 100.0 {
        // Only spans at the ends of the f64 range get here.
        return Axis {
            low,
            high,
            ticks: [low, high]
                .into_iter()
                .map(|position| Tick {
                    position,
                    label: format_number(position),
                })
                .collect(),
            minor: Vec::new(),
        };
    }

    let decimals = (-(step.log10() + WHOLE_NUMBER_TOLERANCE).floor()).max(0.0) as usize;
    let ticks = (0..=(last - first) as u32)
        .map(|index| {
            let position = (first + f64::from(index)) * step;
            Tick {
                position,
                label: linear_label(position, decimals),
            }
        })
        .collect();
    Axis {
        low: first * step,
        high: last * step,
        ticks,
        minor: Vec::new(),
    }
}

/// Rounds a raw tick step up to 1, 2 or 5 times a power of ten.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let residual = raw / magnitude;
    let factor = if residual <= 1.0 + WHOLE_NUMBER_TOLERANCE {
        1.0
    } else if residual <= 2.0 + WHOLE_NUMBER_TOLERANCE {
        2.0
    } else if residual <= 5.0 + WHOLE_NUMBER_TOLERANCE {
        5.0
    } else {
        10.0
    };
    factor * magnitude
}

fn linear_label(value: f64, decimals: usize) -> String {
    // Zero computed as a multiple of a step can come out as -0.
    if value.abs() < f64::MIN_POSITIVE {
        return "0".to_owned();
    }
    if decimals > 12 || value.abs() >= 1e15 {
        return format_number(value);
    }
    let sign = if value < 0.0 { "-" } else { "" };
    let text = format!("{:.decimals$}", value.abs());
    format!("{sign}{}", group_decimal(&text))
}

/// Builds an axis whose ticks sit at whole positions, which are powers of ten on a
/// log10 axis and 0, 90, 99, 99.9 and so on on a nines axis.
fn decade_axis(low: f64, high: f64, label: fn(i32) -> String, minor_ticks: bool) -> Axis {
    let mut first = (low + WHOLE_NUMBER_TOLERANCE).floor();
    let mut last = (high - WHOLE_NUMBER_TOLERANCE).ceil();
    if last <= first {
        // All positions are one whole number, which is put in the middle.
        first -= 1.0;
        last = first + 2.0;
    }

    let count = (last - first) as usize + 1;
    let label_every = count.div_ceil(MAX_DECADE_LABELS);
    let mut ticks = Vec::with_capacity(count);
    let mut minor = Vec::new();
    for index in 0..count {
        let whole = first as i32 + index as i32;
        ticks.push(Tick {
            position: f64::from(whole),
            label: if index.is_multiple_of(label_every) {
                label(whole)
            } else {
                String::new()
            },
        });
        if minor_ticks && count <= 7 && index + 1 < count {
            minor.extend((2..10).map(|multiple| f64::from(whole) + f64::from(multiple).log10()));
        }
    }
    Axis {
        low: first,
        high: last,
        ticks,
        minor,
    }
}

/// Labels 10^exponent as a decimal (`0.01`, `1,000`) near 1 and with a
/// superscript exponent (`10⁶`) further out.
fn power_of_ten_label(exponent: i32) -> String {
    match exponent {
        0..=5 => group_thousands(&format!("1{}", "0".repeat(exponent as usize))),
        -3..=-1 => format!("0.{}1", "0".repeat((-exponent - 1) as usize)),
        _ => format!("10{}", superscript(exponent)),
    }
}

fn superscript(number: i32) -> String {
    number
        .to_string()
        .chars()
        .map(|character| match character {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            _ => '⁹',
        })
        .collect()
}

/// Labels a whole number of nines with its percentile: 0, 90, 99, 99.9 …
fn nines_label(count: i32) -> String {
    match count {
        0 => "0".to_owned(),
        1 => "90".to_owned(),
        2 => "99".to_owned(),
        3.. => format!("99.{}", "9".repeat((count - 2) as usize)),
        // Negative percentiles are not percentiles, but they are shown
        // where they fall rather than dropped.
        _ => format_number(100.0 - 10f64.powi(2 - count)),
    }
}

/// Where the parts of the chart go, which depends on the lengths of the
/// title, the legend labels and the tick labels.
struct Layout {
    title_lines: Vec<String>,
    legend: Vec<LegendEntry>,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

struct LegendEntry {
    label: String,
    x: f64,
    y: f64,
}

impl Layout {
    fn new(
        chart: &Chart,
        lines: &[Vec<Option<PlotPoint>>],
        x_axis: Option<&Axis>,
        y_axis: Option<&Axis>,
    ) -> Layout {
        let title_lines = wrap_words(
            &chart.title,
            ((WIDTH - 2.0 * MARGIN) / (TITLE_FONT_SIZE * 0.6)) as usize,
        );
        let title_bottom = MARGIN + TITLE_LINE_HEIGHT * title_lines.len() as f64;

        let widest_y_label = y_axis
            .map(|axis| {
                axis.ticks
                    .iter()
                    .map(|tick| text_width(&tick.label))
                    .fold(0.0, f64::max)
            })
            .unwrap_or(0.0);
        let y_label_room = if chart.y_label.trim().is_empty() {
            0.0
        } else {
            FONT_SIZE + 10.0
        };
        let left = MARGIN + y_label_room + widest_y_label + TICK_LENGTH + 6.0;
        // The last x tick label is centred on the right edge of the plot.
        let last_x_label = x_axis
            .and_then(|axis| axis.ticks.last())
            .map_or(0.0, |tick| text_width(&tick.label) / 2.0);
        let right = WIDTH - MARGIN.max(last_x_label + 4.0);

        let mut legend = Vec::with_capacity(chart.lines.len());
        let mut x = left;
        let mut y = title_bottom + 12.0;
        for (line, points) in chart.lines.iter().zip(lines) {
            let has_points = points.iter().any(Option::is_some);
            let label = legend_label(&line.label, has_points);
            let width = LEGEND_SWATCH + 6.0 + text_width(&label) + 18.0;
            if x > left && x + width > right {
                x = left;
                y += LEGEND_ROW_HEIGHT;
            }
            legend.push(LegendEntry { label, x, y });
            x += width;
        }
        let legend_bottom = if legend.is_empty() {
            title_bottom
        } else {
            y + LEGEND_ROW_HEIGHT
        };

        let x_label_room = if chart.x_label.trim().is_empty() {
            0.0
        } else {
            FONT_SIZE + 8.0
        };
        Layout {
            title_lines,
            legend,
            left,
            right,
            top: legend_bottom + 10.0,
            bottom: HEIGHT - MARGIN - x_label_room - FONT_SIZE - TICK_LENGTH - 6.0,
        }
    }
}

/// Estimates the width of text at the base font size as 0.6 em per
/// character, a little wider than the average character of common
/// sans-serif fonts, because the real width depends on the viewer's font.
fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * FONT_SIZE * 0.6
}

fn wrap_words(text: &str, max_chars: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > max_chars {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

fn legend_label(label: &str, has_points: bool) -> String {
    let label = if label.trim().is_empty() {
        "(unnamed)"
    } else {
        label
    };
    if has_points {
        label.to_owned()
    } else {
        format!("{label} (no data)")
    }
}

fn draw_title(svg: &mut String, layout: &Layout) {
    for (index, line) in layout.title_lines.iter().enumerate() {
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"{TITLE_FONT_SIZE}\" \
             font-weight=\"600\">{}</text>\n",
            WIDTH / 2.0,
            MARGIN + TITLE_FONT_SIZE + TITLE_LINE_HEIGHT * index as f64 - 2.0,
            escape_xml(line)
        ));
    }
}

fn draw_legend(svg: &mut String, layout: &Layout) {
    for (index, entry) in layout.legend.iter().enumerate() {
        let middle = entry.y + LEGEND_ROW_HEIGHT / 2.0;
        let style = LineStyle::of(index);
        svg.push_str(&format!(
            "<line x1=\"{:.1}\" y1=\"{middle:.1}\" x2=\"{:.1}\" y2=\"{middle:.1}\" stroke=\"{}\" \
             stroke-width=\"2\"{}/>\n",
            entry.x,
            entry.x + LEGEND_SWATCH,
            style.colour,
            style.dash
        ));
        svg.push_str(&style.marker(entry.x + LEGEND_SWATCH / 2.0, middle, None));
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            entry.x + LEGEND_SWATCH + 6.0,
            middle + FONT_SIZE * 0.35,
            escape_xml(&entry.label)
        ));
    }
}

fn draw_grid(svg: &mut String, layout: &Layout, x_axis: &Axis, y_axis: &Axis) {
    let (left, right, top, bottom) = (layout.left, layout.right, layout.top, layout.bottom);
    let x_of = |position: f64| left + x_axis.fraction(position) * (right - left);
    let y_of = |position: f64| bottom - y_axis.fraction(position) * (bottom - top);

    for &position in &x_axis.minor {
        let x = x_of(position);
        svg.push_str(&vertical_line(x, top, bottom, MINOR_GRID_COLOUR));
    }
    for &position in &y_axis.minor {
        let y = y_of(position);
        svg.push_str(&horizontal_line(left, right, y, MINOR_GRID_COLOUR));
    }
    for tick in &x_axis.ticks {
        svg.push_str(&vertical_line(
            x_of(tick.position),
            top,
            bottom,
            GRID_COLOUR,
        ));
    }
    for tick in &y_axis.ticks {
        svg.push_str(&horizontal_line(
            left,
            right,
            y_of(tick.position),
            GRID_COLOUR,
        ));
    }
}

fn draw_axes(svg: &mut String, chart: &Chart, layout: &Layout, x_axis: &Axis, y_axis: &Axis) {
    let (left, right, top, bottom) = (layout.left, layout.right, layout.top, layout.bottom);
    svg.push_str(&horizontal_line(left, right, bottom, AXIS_COLOUR));
    svg.push_str(&vertical_line(left, top, bottom, AXIS_COLOUR));

    for tick in &x_axis.ticks {
        let x = left + x_axis.fraction(tick.position) * (right - left);
        svg.push_str(&vertical_line(x, bottom, bottom + TICK_LENGTH, AXIS_COLOUR));
        if !tick.label.is_empty() {
            svg.push_str(&format!(
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
                bottom + TICK_LENGTH + FONT_SIZE + 2.0,
                escape_xml(&tick.label)
            ));
        }
    }
    for tick in &y_axis.ticks {
        let y = bottom - y_axis.fraction(tick.position) * (bottom - top);
        svg.push_str(&horizontal_line(left - TICK_LENGTH, left, y, AXIS_COLOUR));
        if !tick.label.is_empty() {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                left - TICK_LENGTH - 4.0,
                y + FONT_SIZE * 0.35,
                escape_xml(&tick.label)
            ));
        }
    }

    draw_axis_labels(svg, chart, layout);
}

fn draw_axis_labels(svg: &mut String, chart: &Chart, layout: &Layout) {
    if !chart.x_label.trim().is_empty() {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            (layout.left + layout.right) / 2.0,
            HEIGHT - MARGIN,
            escape_xml(&chart.x_label)
        ));
    }
    if !chart.y_label.trim().is_empty() {
        let x = MARGIN + FONT_SIZE;
        let y = (layout.top + layout.bottom) / 2.0;
        svg.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\" \
             transform=\"rotate(-90 {x:.1} {y:.1})\">{}</text>\n",
            escape_xml(&chart.y_label)
        ));
    }
}

fn draw_no_data(svg: &mut String, chart: &Chart, layout: &Layout) {
    let (left, right, top, bottom) = (layout.left, layout.right, layout.top, layout.bottom);
    svg.push_str(&horizontal_line(left, right, bottom, AXIS_COLOUR));
    svg.push_str(&vertical_line(left, top, bottom, AXIS_COLOUR));
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{AXIS_COLOUR}\">No data</text>\n",
        (left + right) / 2.0,
        (top + bottom) / 2.0
    ));
    draw_axis_labels(svg, chart, layout);
}

/// The plot area and its axes, which every line is drawn into.
struct Frame<'a> {
    layout: &'a Layout,
    x_axis: &'a Axis,
    y_axis: &'a Axis,
}

impl Frame<'_> {
    fn pixel(&self, position: [f64; 2]) -> (f64, f64) {
        let layout = self.layout;
        (
            layout.left + self.x_axis.fraction(position[0]) * (layout.right - layout.left),
            layout.bottom - self.y_axis.fraction(position[1]) * (layout.bottom - layout.top),
        )
    }
}

/// Draws one line as a single path, broken where points were skipped, and
/// marks its points, each with its values as a tooltip.
fn draw_line(
    svg: &mut String,
    frame: &Frame,
    index: usize,
    label: &str,
    points: &[Option<PlotPoint>],
) {
    let style = LineStyle::of(index);
    let mut path = String::new();
    let mut after_gap = true;
    for slot in points {
        match slot {
            Some(point) => {
                let (x, y) = frame.pixel(point.position);
                let command = if after_gap { 'M' } else { 'L' };
                path.push_str(&format!("{command}{x:.1} {y:.1} "));
                after_gap = false;
            }
            None => after_gap = true,
        }
    }
    if path.is_empty() {
        return;
    }
    svg.push_str(&format!(
        "<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-linejoin=\"round\" \
         stroke-linecap=\"round\"{}/>\n",
        path.trim_end(),
        style.colour,
        style.dash
    ));

    let drawn: Vec<&PlotPoint> = points.iter().flatten().collect();
    if drawn.len() > MAX_MARKED_POINTS {
        return;
    }
    for point in drawn {
        let (x, y) = frame.pixel(point.position);
        let tooltip = format!(
            "{}: {}, {}",
            legend_label(label, true),
            exact_number(point.value[0]),
            exact_number(point.value[1])
        );
        svg.push_str(&style.marker(x, y, Some(&tooltip)));
    }
}

/// Formats a value unrounded for tooltips, where a reader wants the
/// measured number rather than the rounded one of the tick labels.
fn exact_number(value: f64) -> String {
    if value == 0.0 || (1e-4..1e15).contains(&value.abs()) {
        format!("{value}")
    } else {
        format!("{value:e}")
    }
}

/// Colour, dash and marker shape of the line at an index. Shapes repeat
/// every four lines and colours every eight, and lines past the eighth are
/// dashed, so that the first 16 lines all look different.
struct LineStyle {
    colour: &'static str,
    dash: &'static str,
    shape: Shape,
}

#[derive(Clone, Copy)]
enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
}

impl LineStyle {
    fn of(index: usize) -> LineStyle {
        let shape = match index % 4 {
            0 => Shape::Circle,
            1 => Shape::Square,
            2 => Shape::Triangle,
            _ => Shape::Diamond,
        };
        LineStyle {
            colour: PALETTE[index % PALETTE.len()],
            dash: if index < PALETTE.len() {
                ""
            } else {
                " stroke-dasharray=\"6 3\""
            },
            shape,
        }
    }

    fn marker(&self, x: f64, y: f64, tooltip: Option<&str>) -> String {
        let r = MARKER_RADIUS;
        let paint = format!(
            "fill=\"{}\" stroke=\"#ffffff\" stroke-width=\"1\"",
            self.colour
        );
        let (tag, geometry) = match self.shape {
            Shape::Circle => ("circle", format!("cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{r}\"")),
            Shape::Square => (
                "rect",
                format!(
                    "x=\"{:.1}\" y=\"{:.1}\" width=\"{}\" height=\"{}\"",
                    x - r,
                    y - r,
                    2.0 * r,
                    2.0 * r
                ),
            ),
            Shape::Triangle => {
                let size = r * 1.3;
                (
                    "polygon",
                    format!(
                        "points=\"{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\"",
                        y - size,
                        x - size,
                        y + size * 0.8,
                        x + size,
                        y + size * 0.8
                    ),
                )
            }
            Shape::Diamond => {
                let size = r * 1.3;
                (
                    "polygon",
                    format!(
                        "points=\"{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}\"",
                        y - size,
                        x + size,
                        y + size,
                        x - size
                    ),
                )
            }
        };
        match tooltip {
            Some(tooltip) => format!(
                "<{tag} {geometry} {paint}><title>{}</title></{tag}>\n",
                escape_xml(tooltip)
            ),
            None => format!("<{tag} {geometry} {paint}/>\n"),
        }
    }
}

fn horizontal_line(x1: f64, x2: f64, y: f64, colour: &str) -> String {
    format!(
        "<line x1=\"{x1:.1}\" y1=\"{y:.1}\" x2=\"{x2:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\"/>\n"
    )
}

fn vertical_line(x: f64, y1: f64, y2: f64, colour: &str) -> String {
    format!(
        "<line x1=\"{x:.1}\" y1=\"{y1:.1}\" x2=\"{x:.1}\" y2=\"{y2:.1}\" stroke=\"{colour}\"/>\n"
    )
}

/// Escapes text for XML content and attribute values, and drops the control
/// characters that XML 1.0 forbids, which would make the file unreadable.
fn escape_xml(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            '\t' | '\n' | '\r' => escaped.push(' '),
            control if control.is_control() && u32::from(control) < 0x20 => {}
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Line;

    fn chart(x_scale: Scale, y_scale: Scale, lines: Vec<Line>) -> Chart {
        Chart {
            file_stem: "test".to_owned(),
            title: "Delivery latency".to_owned(),
            x_label: "percentile".to_owned(),
            y_label: "latency (ms)".to_owned(),
            x_scale,
            y_scale,
            lines,
        }
    }

    fn line(label: &str, points: &[[f64; 2]]) -> Line {
        Line {
            label: label.to_owned(),
            points: points.to_vec(),
        }
    }

    /// Checks that every element opened is closed in order, that no text
    /// contains a raw `<` or `&` that is not an entity, and that nothing
    /// follows the root element.
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg "), "does not start with <svg: {svg}");
        assert!(
            svg.trim_end().ends_with("</svg>"),
            "does not end with </svg>"
        );
        let mut open: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            for (offset, _) in text.match_indices('&') {
                let entity = &text[offset..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                        .iter()
                        .any(|known| entity.starts_with(known)),
                    "bare & in text: {text}"
                );
            }
            let end = rest[start..]
                .find('>')
                .map(|end| start + end)
                .expect("unclosed tag");
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "< inside a tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap_or_default();
                open.push(name.to_owned());
            }
            rest = &rest[end + 1..];
            if open.is_empty() {
                assert!(
                    rest.trim().is_empty(),
                    "content after the root element: {rest}"
                );
            }
        }
        assert!(open.is_empty(), "unclosed elements: {open:?}");
    }

    fn tick_labels(axis: &Axis) -> Vec<&str> {
        axis.ticks.iter().map(|tick| tick.label.as_str()).collect()
    }

    #[test]
    fn svg_basics() {
        let svg = render_svg(&chart(
            Scale::Linear,
            Scale::Linear,
            vec![
                line("parley", &[[1.0, 10.0], [2.0, 20.0], [3.0, 15.0]]),
                line("floor", &[[1.0, 12.0], [2.0, 25.0], [3.0, 30.0]]),
            ],
        ));
        assert_well_formed(&svg);
        assert!(svg.contains("width=\"720\" height=\"420\""));
        assert_eq!(svg.matches("<path ").count(), 2);
        assert!(svg.contains(PALETTE[0]));
        assert!(svg.contains(PALETTE[1]));
        assert!(svg.contains(">parley</text>"));
        assert!(svg.contains(">floor</text>"));
        assert!(svg.contains(">percentile</text>"));
        assert!(svg.contains(">latency (ms)</text>"));
        assert!(svg.contains("<circle "));
        assert!(svg.contains("<rect x="));
    }

    #[test]
    fn svg_escapes_labels() {
        let mut escaped = chart(
            Scale::Linear,
            Scale::Linear,
            vec![line("a & <b>", &[[1.0, 1.0]])],
        );
        escaped.title = "p99 <25 ms & \"quoted\"".to_owned();
        escaped.x_label = "x<y".to_owned();
        let svg = render_svg(&escaped);
        assert_well_formed(&svg);
        assert!(svg.contains("p99 &lt;25 ms &amp; &quot;quoted&quot;"));
        assert!(svg.contains("x&lt;y"));
        assert!(svg.contains("a &amp; &lt;b&gt;"));
        assert!(!svg.contains("<b>"));
        assert!(!svg.contains("<25"));
    }

    #[test]
    fn escape_xml_drops_control_characters() {
        assert_eq!(escape_xml("a\u{1}b\nc"), "ab c");
        assert_eq!(escape_xml("'"), "&apos;");
    }

    #[test]
    fn nines_mapping() {
        assert!((nines(0.0) - 0.0).abs() < 1e-12);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert!((nines(99.99) - 4.0).abs() < 1e-9);
        assert!((nines(50.0) - 2f64.log10()).abs() < 1e-12);
        assert_eq!(scale_position(Scale::Nines, 100.0), Some(f64::INFINITY));
        assert_eq!(scale_position(Scale::Nines, f64::NAN), None);
    }

    #[test]
    fn nines_ticks() {
        let positions = [nines(50.0), nines(99.99)];
        let axis = Axis::fit(Scale::Nines, &positions, LINEAR_TICKS_X, false).unwrap();
        assert_eq!(tick_labels(&axis), ["0", "90", "99", "99.9", "99.99"]);
        assert_eq!(axis.low, 0.0);
        assert_eq!(axis.high, 4.0);

        let axis = Axis::fit(
            Scale::Nines,
            &[nines(99.0), nines(99.9)],
            LINEAR_TICKS_X,
            false,
        )
        .unwrap();
        assert_eq!(tick_labels(&axis), ["99", "99.9"]);
        assert_eq!(nines_label(6), "99.9999");
    }

    #[test]
    fn nines_clamps_hundred_to_largest_position() {
        let clamped = chart(
            Scale::Nines,
            Scale::Linear,
            vec![
                line("a", &[[50.0, 1.0], [99.9, 2.0], [100.0, 5.0]]),
                line("b", &[[99.0, 1.0], [100.0, 3.0]]),
            ],
        );
        let lines = project_lines(&clamped);
        let hundred_a = lines[0][2].unwrap().position[0];
        let hundred_b = lines[1][1].unwrap().position[0];
        assert!((hundred_a - 3.0).abs() < 1e-9);
        assert!((hundred_b - 3.0).abs() < 1e-9);
        assert_well_formed(&render_svg(&clamped));

        // Without a finite percentile there is no end to clamp to.
        let lines = project_lines(&chart(
            Scale::Nines,
            Scale::Linear,
            vec![line("a", &[[100.0, 1.0]])],
        ));
        assert!(lines[0][0].is_none());
    }

    #[test]
    fn log_ticks_at_powers_of_ten() {
        let axis = Axis::fit(
            Scale::Log10,
            &[0.5f64.log10(), 2_000f64.log10()],
            LINEAR_TICKS_Y,
            true,
        )
        .unwrap();
        assert_eq!(
            tick_labels(&axis),
            ["0.1", "1", "10", "100", "1,000", "10,000"]
        );
        assert_eq!(axis.minor.len(), 5 * 8);
        assert_eq!(power_of_ten_label(6), "10⁶");
        assert_eq!(power_of_ten_label(-4), "10⁻⁴");

        // log10(1000) is slightly below 3, which must not add a decade.
        let axis = Axis::fit(
            Scale::Log10,
            &[1f64.log10(), 1_000f64.log10()],
            LINEAR_TICKS_Y,
            true,
        )
        .unwrap();
        assert_eq!(tick_labels(&axis), ["1", "10", "100", "1,000"]);
    }

    #[test]
    fn log_thins_labels_over_many_decades() {
        let axis = Axis::fit(Scale::Log10, &[-20.0, 20.0], LINEAR_TICKS_Y, true).unwrap();
        let labelled = axis
            .ticks
            .iter()
            .filter(|tick| !tick.label.is_empty())
            .count();
        assert_eq!(axis.ticks.len(), 41);
        assert!(labelled <= MAX_DECADE_LABELS, "{labelled} labels");
        assert!(axis.minor.is_empty());
    }

    #[test]
    fn log_skips_non_positive_values() {
        let svg_chart = chart(
            Scale::Linear,
            Scale::Log10,
            vec![line(
                "a",
                &[
                    [1.0, 10.0],
                    [2.0, 0.0],
                    [3.0, -5.0],
                    [4.0, 1_000.0],
                    [5.0, 100.0],
                ],
            )],
        );
        let lines = project_lines(&svg_chart);
        assert!(lines[0][1].is_none());
        assert!(lines[0][2].is_none());
        let svg = render_svg(&svg_chart);
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<path ").count(), 1);
        // The skipped points break the line into two parts.
        let path = svg.split("<path d=\"").nth(1).unwrap_or_default();
        let data = path.split('"').next().unwrap_or_default();
        assert_eq!(data.matches('M').count(), 2);
        assert_eq!(data.matches('L').count(), 1);
    }

    #[test]
    fn linear_ticks_are_nice() {
        let axis = Axis::fit(Scale::Linear, &[0.0, 41_200.0], LINEAR_TICKS_Y, true).unwrap();
        assert_eq!(
            tick_labels(&axis),
            ["0", "10,000", "20,000", "30,000", "40,000", "50,000"]
        );

        let axis = Axis::fit(Scale::Linear, &[0.12, 0.43], LINEAR_TICKS_X, false).unwrap();
        assert_eq!(
            tick_labels(&axis),
            ["0.1", "0.15", "0.2", "0.25", "0.3", "0.35", "0.4", "0.45"]
        );

        let axis = Axis::fit(Scale::Linear, &[-3.0, 2.0], LINEAR_TICKS_Y, true).unwrap();
        assert_eq!(tick_labels(&axis), ["-3", "-2", "-1", "0", "1", "2"]);
    }

    #[test]
    fn linear_equal_values() {
        let axis = Axis::fit(Scale::Linear, &[5.0, 5.0], LINEAR_TICKS_X, false).unwrap();
        assert!(axis.low < 5.0, "low {}", axis.low);
        assert!(axis.high > 5.0, "high {}", axis.high);
        let axis = Axis::fit(Scale::Linear, &[0.0], LINEAR_TICKS_Y, true).unwrap();
        assert_eq!((axis.low, axis.high), (0.0, 1.0));
        let axis = Axis::fit(Scale::Linear, &[0.0], LINEAR_TICKS_X, false).unwrap();
        assert_eq!((axis.low, axis.high), (-1.0, 1.0));
        let axis = Axis::fit(Scale::Log10, &[2.0], LINEAR_TICKS_Y, true).unwrap();
        assert_eq!((axis.low, axis.high), (1.0, 3.0));
    }

    #[test]
    fn linear_extreme_values() {
        let axis = Axis::fit(Scale::Linear, &[-f64::MAX, f64::MAX], LINEAR_TICKS_X, false).unwrap();
        assert!(axis.fraction(0.0).is_finite());
        let svg = render_svg(&chart(
            Scale::Linear,
            Scale::Linear,
            vec![line(
                "a",
                &[
                    [-f64::MAX, f64::MAX],
                    [f64::MAX, -f64::MAX],
                    [1e-320, 5e-324],
                ],
            )],
        ));
        assert_well_formed(&svg);
        assert!(!svg.contains("NaN"));
        assert!(!svg.contains("inf"));
    }

    #[test]
    fn degenerate_charts_do_not_fail() {
        let cases = vec![
            ("no lines", chart(Scale::Linear, Scale::Linear, Vec::new())),
            (
                "empty line",
                chart(Scale::Log10, Scale::Log10, vec![line("a", &[])]),
            ),
            (
                "single point",
                chart(Scale::Linear, Scale::Linear, vec![line("a", &[[1.0, 1.0]])]),
            ),
            (
                "single nines point",
                chart(Scale::Nines, Scale::Log10, vec![line("a", &[[99.0, 3.0]])]),
            ),
            (
                "equal values",
                chart(
                    Scale::Linear,
                    Scale::Linear,
                    vec![line("a", &[[2.0, 7.0], [2.0, 7.0]])],
                ),
            ),
            (
                "only non-finite",
                chart(
                    Scale::Linear,
                    Scale::Linear,
                    vec![line(
                        "a",
                        &[
                            [f64::NAN, 1.0],
                            [1.0, f64::INFINITY],
                            [f64::NEG_INFINITY, 0.0],
                        ],
                    )],
                ),
            ),
            (
                "mixed non-finite",
                chart(
                    Scale::Nines,
                    Scale::Log10,
                    vec![
                        line(
                            "a",
                            &[
                                [f64::NAN, 1.0],
                                [90.0, 2.0],
                                [100.0, f64::INFINITY],
                                [99.0, 4.0],
                            ],
                        ),
                        line("b", &[[99.9, 0.0]]),
                    ],
                ),
            ),
            ("empty labels", {
                let mut unlabelled = chart(
                    Scale::Linear,
                    Scale::Linear,
                    vec![line("", &[[1.0, 2.0], [2.0, 3.0]])],
                );
                unlabelled.title = String::new();
                unlabelled.x_label = String::new();
                unlabelled.y_label = String::new();
                unlabelled
            }),
        ];
        for (name, case) in cases {
            let svg = render_svg(&case);
            assert_well_formed(&svg);
            assert!(!svg.contains("NaN"), "{name}: NaN in output");
            assert!(!svg.contains("inf"), "{name}: infinity in output");
        }
    }

    #[test]
    fn empty_chart_says_no_data() {
        let svg = render_svg(&chart(
            Scale::Linear,
            Scale::Linear,
            vec![line("a", &[[f64::NAN, 1.0]])],
        ));
        assert!(svg.contains(">No data</text>"));
        assert!(svg.contains("a (no data)"));
        assert_eq!(svg.matches("<path ").count(), 0);
    }

    #[test]
    fn lines_get_distinct_styles() {
        let lines: Vec<Line> = (0..10)
            .map(|index| {
                line(
                    &format!("line {index}"),
                    &[[f64::from(index), 1.0], [f64::from(index) + 1.0, 2.0]],
                )
            })
            .collect();
        let svg = render_svg(&chart(Scale::Linear, Scale::Linear, lines));
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<path ").count(), 10);
        for colour in PALETTE {
            assert!(svg.contains(colour), "{colour} unused");
        }
        assert!(svg.contains("stroke-dasharray"));
    }

    #[test]
    fn long_lines_are_not_marked() {
        let points: Vec<[f64; 2]> = (0..500)
            .map(|index| [f64::from(index), f64::from(index % 7)])
            .collect();
        let svg = render_svg(&chart(
            Scale::Linear,
            Scale::Linear,
            vec![line("a", &points)],
        ));
        // The only circle is the marker in the legend.
        assert_eq!(svg.matches("<circle ").count(), 1);
    }

    #[test]
    fn long_titles_wrap() {
        assert_eq!(wrap_words("one two three", 7), ["one two", "three"]);
        assert_eq!(
            wrap_words("averyveryverylongword", 5),
            ["averyveryverylongword"]
        );
        assert!(wrap_words("  ", 5).is_empty());
    }
}

//! The Markdown page of a run, `report.md`: the verdict on every target
//! first, then the machine, then one table, notes and charts per benchmark.
//! Also the number formatting that the charts share.

use crate::report::{Benchmark, Chart, Figure, Report, Target};

/// Significant digits shown of values below 100. Larger values are shown
/// whole.
const SIGNIFICANT_DIGITS: i32 = 3;

/// Content of an empty table cell.
const EMPTY_CELL: &str = "–";

const BYTES_PER_GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Renders the whole report as one Markdown page.
pub fn render(report: &Report) -> String {
    let mut page = format!(
        "# Parley benchmarks · {} profile · {}\n\n",
        single_line(&report.profile),
        format_utc(report.started_at)
    );
    page.push_str(&render_summary(report));
    page.push_str(&render_machine(report));
    for benchmark in &report.benchmarks {
        page.push_str(&render_benchmark(benchmark));
    }
    if report.benchmarks.is_empty() {
        page.push_str("No benchmarks ran.\n");
    }
    page
}

/// Lists every figure that has a target, so that the verdict comes before
/// the details. Also names the benchmarks without any figures, because a
/// failed benchmark would otherwise be missing from the verdict.
fn render_summary(report: &Report) -> String {
    let targeted: Vec<(&Benchmark, &Figure, &Target)> = report
        .benchmarks
        .iter()
        .flat_map(|benchmark| {
            benchmark.figures.iter().filter_map(move |figure| {
                figure
                    .target
                    .as_ref()
                    .map(|target| (benchmark, figure, target))
            })
        })
        .collect();

    let mut section = String::from("## Summary\n\n");
    let met = targeted.iter().filter(|(_, _, target)| target.met).count();
    section.push_str(&verdict(met, targeted.len()));
    section.push_str("\n\n");

    if !targeted.is_empty() {
        section.push_str("| Benchmark | Figure | Value | Ratio | Target |\n");
        section.push_str("|---|---|--:|--:|---|\n");
        for (benchmark, figure, target) in &targeted {
            let row = [
                escape_cell(&benchmark.id),
                escape_cell(&figure.name),
                escape_cell(&format_quantity(figure.value, &figure.unit)),
                optional_cell(figure.ratio.map(format_number)),
                escape_cell(&target_text(target)),
            ];
            section.push_str(&table_row(&row));
        }
        section.push('\n');
    }

    let without_figures: Vec<&Benchmark> = report
        .benchmarks
        .iter()
        .filter(|benchmark| benchmark.figures.is_empty())
        .collect();
    if !without_figures.is_empty() {
        section.push_str("Benchmarks without figures:\n\n");
        for benchmark in without_figures {
            let reason = match benchmark.notes.first() {
                Some(note) => format!(" ({})", single_line(note)),
                None => String::new(),
            };
            section.push_str(&format!(
                "- {} · {}{reason}\n",
                single_line(&benchmark.id),
                single_line(&benchmark.title)
            ));
        }
        section.push('\n');
    }
    section
}

fn verdict(met: usize, total: usize) -> String {
    match (met, total) {
        (_, 0) => "No figure has a target.".to_owned(),
        (1, 1) => "The one target was met.".to_owned(),
        (0, 1) => "The one target was not met.".to_owned(),
        (met, total) if met == total => format!("All {total} targets were met."),
        (met, total) => format!("{met} of {total} targets were met."),
    }
}

fn render_machine(report: &Report) -> String {
    let machine = &report.machine;
    let cpus = match machine.cpus {
        1 => "1 CPU".to_owned(),
        count => format!("{count} CPUs"),
    };
    let memory = match machine.memory_bytes {
        0 => "unknown".to_owned(),
        bytes => format_quantity(bytes as f64 / BYTES_PER_GIB, "GiB"),
    };
    let open_files = match machine.open_files_limit {
        0 => "unknown".to_owned(),
        limit => format_number(limit as f64),
    };
    let mut section = String::from("## Machine\n\n");
    section.push_str(&format!(
        "- CPU: {}, {cpus}\n",
        or_unknown(&machine.cpu_model)
    ));
    section.push_str(&format!("- Memory: {memory}\n"));
    section.push_str(&format!("- Kernel: {}\n", or_unknown(&machine.kernel)));
    section.push_str(&format!("- Open-files limit: {open_files}\n"));
    section.push_str(&format!("- Pinning: {}\n\n", or_unknown(&report.pinning)));
    section
}

fn render_benchmark(benchmark: &Benchmark) -> String {
    let mut section = format!(
        "## {} · {}\n\n",
        single_line(&benchmark.id),
        single_line(&benchmark.title)
    );

    if benchmark.figures.is_empty() {
        section.push_str("No figures.\n\n");
    } else {
        section.push_str("| Figure | Value | Floor | Ratio | Load generator CPU | Target |\n");
        section.push_str("|---|--:|--:|--:|--:|---|\n");
        for figure in &benchmark.figures {
            section.push_str(&table_row(&figure_cells(figure)));
        }
        section.push('\n');
    }

    if !benchmark.notes.is_empty() {
        for note in &benchmark.notes {
            // Continuation lines are indented so that they stay in the item.
            section.push_str(&format!("- {}\n", note.trim().replace('\n', "\n  ")));
        }
        section.push('\n');
    }

    for chart in &benchmark.charts {
        section.push_str(&chart_link(chart));
        section.push_str("\n\n");
    }
    section
}

fn figure_cells(figure: &Figure) -> [String; 6] {
    [
        escape_cell(&figure.name),
        escape_cell(&format_quantity(figure.value, &figure.unit)),
        optional_cell(
            figure
                .floor
                .map(|floor| format_quantity(floor, &figure.unit)),
        ),
        optional_cell(figure.ratio.map(format_number)),
        optional_cell(
            figure
                .load_generator_cpu_percent
                .map(|percent| format_quantity(percent, "%")),
        ),
        optional_cell(figure.target.as_ref().map(target_text)),
    ]
}

fn target_text(target: &Target) -> String {
    let mark = if target.met { "✓" } else { "✗" };
    format!("{mark} {}", target.goal)
}

fn table_row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

fn optional_cell(text: Option<String>) -> String {
    match text {
        Some(text) => escape_cell(&text),
        None => EMPTY_CELL.to_owned(),
    }
}

/// Makes text safe inside a table cell: a `|` would end the cell and a line
/// break would end the row.
fn escape_cell(text: &str) -> String {
    let text = single_line(text).replace('|', "\\|");
    if text.trim().is_empty() {
        EMPTY_CELL.to_owned()
    } else {
        text
    }
}

fn single_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn or_unknown(text: &str) -> String {
    match single_line(text) {
        text if text.is_empty() => "unknown".to_owned(),
        text => text,
    }
}

/// Returns an image link to the chart's SVG file, which `Report::write`
/// puts next to `report.md`.
fn chart_link(chart: &Chart) -> String {
    let mut alt = String::new();
    for character in single_line(&chart.title).chars() {
        if matches!(character, '[' | ']' | '\\') {
            alt.push('\\');
        }
        alt.push(character);
    }
    format!("![{alt}]({}.svg)", percent_encode(&chart.file_stem))
}

/// Percent-encodes everything but unreserved URL characters, so that spaces
/// or brackets in a file name cannot end the link.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Formats a value followed by its unit, such as `41,200 msg/s`.
pub(crate) fn format_quantity(value: f64, unit: &str) -> String {
    let unit = unit.trim();
    if unit.is_empty() {
        format_number(value)
    } else {
        format!("{} {unit}", format_number(value))
    }
}

/// Formats a number for people: whole with thousands separators from 100 up
/// (`41,200`), three significant digits below (`12.5`, `0.43`), and
/// scientific notation below 0.0001 and from 10^15 up.
pub(crate) fn format_number(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "∞" } else { "-∞" }.to_owned();
    }
    if value == 0.0 {
        return "0".to_owned();
    }

    let sign = if value < 0.0 { "-" } else { "" };
    let magnitude = value.abs();
    if !(1e-4..1e15).contains(&magnitude) {
        return format!("{sign}{}", format_scientific(magnitude));
    }

    let exponent = magnitude.log10().floor() as i32;
    let decimals = (SIGNIFICANT_DIGITS - 1 - exponent).max(0) as usize;
    // Rounds half away from zero, as people do, where formatting alone would
    // round an exact half to even (1,234.5 to 1,234).
    let scale = 10f64.powi(decimals as i32);
    let rounded = (magnitude * scale).round() / scale;
    let text = format!("{rounded:.decimals$}");
    format!("{sign}{}", group_decimal(&text))
}

/// Adds thousands separators to the whole part of a non-negative decimal
/// such as `41200.50` and drops trailing zeros of its fraction.
pub(crate) fn group_decimal(text: &str) -> String {
    match text.split_once('.') {
        None => group_thousands(text),
        Some((whole, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() {
                group_thousands(whole)
            } else {
                format!("{}.{fraction}", group_thousands(whole))
            }
        }
    }
}

/// Inserts a comma every three digits from the right of a run of digits.
pub(crate) fn group_thousands(digits: &str) -> String {
    let count = digits.chars().count();
    let mut grouped = String::with_capacity(count + count / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (count - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

fn format_scientific(magnitude: f64) -> String {
    let precision = (SIGNIFICANT_DIGITS - 1) as usize;
    let text = format!("{magnitude:.precision$e}");
    match text.split_once('e') {
        Some((mantissa, exponent)) if mantissa.contains('.') => {
            let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
            format!("{mantissa}e{exponent}")
        }
        _ => text,
    }
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DD HH:MM UTC`.
fn format_utc(seconds: u64) -> String {
    let (year, month, day) = civil_date(seconds / 86_400);
    let second_of_day = seconds % 86_400;
    let hour = second_of_day / 3_600;
    let minute = second_of_day % 3_600 / 60;
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

/// Converts days since 1970-01-01 to a Gregorian year, month and day.
///
/// The count is shifted to start on 0000-03-01, so that the leap day is the
/// last day of its year, and split into 400-year eras of 146,097 days each,
/// because the Gregorian calendar repeats after every era.
fn civil_date(days_since_epoch: u64) -> (u64, u64, u64) {
    const DAYS_FROM_YEAR_ZERO_TO_EPOCH: u64 = 719_468;
    const DAYS_PER_ERA: u64 = 146_097;

    let days = days_since_epoch + DAYS_FROM_YEAR_ZERO_TO_EPOCH;
    let era = days / DAYS_PER_ERA;
    let day_of_era = days % DAYS_PER_ERA;
    // Removes the leap days before this day, which leaves 365-day years.
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524
        - day_of_era / (DAYS_PER_ERA - 1))
        / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March have 31, 30, 31, 30, 31 days in a repeating pattern
    // of 153 days per five months.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Line, Scale};
    use crate::system::Machine;

    fn machine() -> Machine {
        Machine {
            cpu_model: "Example CPU @ 3.00GHz".to_owned(),
            cpus: 2,
            memory_bytes: 8 * 1024 * 1024 * 1024,
            kernel: "6.1.0-test".to_owned(),
            open_files_limit: 1_048_576,
        }
    }

    fn report(benchmarks: Vec<Benchmark>) -> Report {
        Report {
            profile: "quick".to_owned(),
            started_at: 1_700_000_000,
            machine: machine(),
            pinning: "servers on CPU 1, load generator on CPU 0".to_owned(),
            benchmarks,
        }
    }

    fn fanout() -> Benchmark {
        let mut benchmark =
            Benchmark::new("B2", "Fan-out: deliveries per second with p99 under 25 ms");
        benchmark.figures.push(
            Figure::new("deliveries per second", "msg/s", 41_200.0)
                .with_floor(80_000.0)
                .with_generator_cpu(95.4)
                .with_target("ratio >= 0.5", true),
        );
        benchmark
            .figures
            .push(Figure::new("p99 latency", "ms", 31.25).with_target("p99 <= 25 ms", false));
        benchmark.figures.push(Figure::new("clients", "", 2_000.0));
        benchmark.note("1 sender | 2,000 receivers");
        benchmark.note("first line\nsecond line");
        benchmark.charts.push(Chart {
            file_stem: "b2-fanout".to_owned(),
            title: "Fan-out [p99]".to_owned(),
            x_label: "clients".to_owned(),
            y_label: "msg/s".to_owned(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            lines: vec![Line {
                label: "parley".to_owned(),
                points: vec![[1.0, 2.0]],
            }],
        });
        benchmark
    }

    #[test]
    fn missed_correctness_targets_named() {
        let mut reconnect = Benchmark::new("B5", "Reconnect storm");
        reconnect
            .figures
            .push(Figure::new("gaps", "", 2.0).with_correctness_target("0", false));
        reconnect
            .figures
            .push(Figure::new("duplicates", "", 0.0).with_correctness_target("0", true));
        // A missed speed target, as B2's here, does not count.
        let report = report(vec![fanout(), reconnect]);

        assert_eq!(report.missed_correctness_targets(), vec!["B5: gaps"]);
    }

    #[test]
    fn format_number_cases() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (0.43, "0.43"),
            (0.4321, "0.432"),
            (12.5, "12.5"),
            (12.0, "12"),
            (4.256, "4.26"),
            (9.996, "10"),
            (99.96, "100"),
            (412.4, "412"),
            (999.6, "1,000"),
            (1_234.5, "1,235"),
            (41_200.0, "41,200"),
            (1_048_576.0, "1,048,576"),
            (-41_200.0, "-41,200"),
            (-0.5, "-0.5"),
            (0.0001, "0.0001"),
            (0.000_012_34, "1.23e-5"),
            (0.000_01, "1e-5"),
            (2.5e15, "2.5e15"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "∞"),
            (f64::NEG_INFINITY, "-∞"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_number(value), expected, "value {value}");
        }
    }

    #[test]
    fn group_thousands_cases() {
        assert_eq!(group_thousands(""), "");
        assert_eq!(group_thousands("7"), "7");
        assert_eq!(group_thousands("999"), "999");
        assert_eq!(group_thousands("1000"), "1,000");
        assert_eq!(group_thousands("123456"), "123,456");
        assert_eq!(group_thousands("1234567"), "1,234,567");
        assert_eq!(group_decimal("1234.500"), "1,234.5");
        assert_eq!(group_decimal("1234.000"), "1,234");
    }

    #[test]
    fn quantity_puts_unit_after_value() {
        assert_eq!(format_quantity(41_200.0, "msg/s"), "41,200 msg/s");
        assert_eq!(format_quantity(95.0, "%"), "95 %");
        assert_eq!(format_quantity(3.0, ""), "3");
        assert_eq!(format_quantity(3.0, "  "), "3");
    }

    #[test]
    fn escape_cell_handles_pipes_and_breaks() {
        assert_eq!(escape_cell("a | b"), "a \\| b");
        assert_eq!(escape_cell("one\ntwo"), "one two");
        assert_eq!(escape_cell("one\r\ntwo"), "one two");
        assert_eq!(escape_cell(""), EMPTY_CELL);
        assert_eq!(escape_cell(" \n "), EMPTY_CELL);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_utc(951_868_799), "2000-02-29 23:59 UTC");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(format_utc(4_107_542_400), "2100-03-01 00:00 UTC");
    }

    #[test]
    fn heading_has_profile_and_date() {
        let page = render(&report(Vec::new()));
        assert!(page.starts_with("# Parley benchmarks · quick profile · 2023-11-14 22:13 UTC\n"));
        assert!(page.contains("No benchmarks ran."));
        assert!(page.contains("No figure has a target."));
    }

    #[test]
    fn summary_lists_targets_first() {
        let page = render(&report(vec![fanout()]));
        let summary_start = page.find("## Summary").unwrap_or(usize::MAX);
        let machine_start = page.find("## Machine").unwrap_or(usize::MAX);
        let benchmark_start = page.find("## B2 · Fan-out").unwrap_or(usize::MAX);
        assert!(summary_start < machine_start);
        assert!(machine_start < benchmark_start);
        assert!(benchmark_start < page.len());

        let summary = &page[summary_start..machine_start];
        assert!(summary.contains("1 of 2 targets were met.\n"));
        assert!(
            summary
                .contains("| B2 | deliveries per second | 41,200 msg/s | 0.515 | ✓ ratio >= 0.5 |")
        );
        assert!(summary.contains("| B2 | p99 latency | 31.3 ms | – | ✗ p99 <= 25 ms |"));
        // A figure without a target is left to the benchmark's own table.
        assert!(!summary.contains("clients"));
    }

    #[test]
    fn summary_when_all_targets_met() {
        let mut benchmark = Benchmark::new("B1", "Idle");
        benchmark
            .figures
            .push(Figure::new("memory per connection", "KiB", 12.0).with_target("<= 16 KiB", true));
        let page = render(&report(vec![benchmark]));
        assert!(page.contains("The one target was met.\n"));
    }

    #[test]
    fn summary_names_benchmarks_without_figures() {
        let error = anyhow::anyhow!("connection refused");
        let failed = Benchmark::failed("B5", "Reconnect storm", &error);
        let page = render(&report(vec![fanout(), failed]));
        let machine_start = page.find("## Machine").unwrap_or(0);
        let summary = &page[..machine_start];
        assert!(summary.contains("- B5 · Reconnect storm (failed: connection refused)"));
        assert!(page.contains("## B5 · Reconnect storm\n\nNo figures.\n"));
    }

    #[test]
    fn verdict_wording() {
        assert_eq!(verdict(0, 0), "No figure has a target.");
        assert_eq!(verdict(0, 1), "The one target was not met.");
        assert_eq!(verdict(3, 3), "All 3 targets were met.");
        assert_eq!(verdict(0, 3), "0 of 3 targets were met.");
    }

    #[test]
    fn machine_section() {
        let page = render(&report(Vec::new()));
        assert!(page.contains("- CPU: Example CPU @ 3.00GHz, 2 CPUs\n"));
        assert!(page.contains("- Memory: 8 GiB\n"));
        assert!(page.contains("- Kernel: 6.1.0-test\n"));
        assert!(page.contains("- Open-files limit: 1,048,576\n"));
        assert!(page.contains("- Pinning: servers on CPU 1, load generator on CPU 0\n"));
    }

    #[test]
    fn machine_section_unknowns() {
        let mut unknown = report(Vec::new());
        unknown.machine = Machine {
            cpu_model: String::new(),
            cpus: 1,
            memory_bytes: 0,
            kernel: String::new(),
            open_files_limit: 0,
        };
        let page = render(&unknown);
        assert!(page.contains("- CPU: unknown, 1 CPU\n"));
        assert!(page.contains("- Memory: unknown\n"));
        assert!(page.contains("- Kernel: unknown\n"));
        assert!(page.contains("- Open-files limit: unknown\n"));
    }

    #[test]
    fn benchmark_table_and_notes() {
        let page = render(&report(vec![fanout()]));
        assert!(page.contains("| Figure | Value | Floor | Ratio | Load generator CPU | Target |\n|---|--:|--:|--:|--:|---|\n"));
        assert!(page.contains(
            "| deliveries per second | 41,200 msg/s | 80,000 msg/s | 0.515 | 95.4 % | ✓ ratio >= 0.5 |\n"
        ));
        assert!(page.contains("| clients | 2,000 | – | – | – | – |\n"));
        assert!(page.contains("- 1 sender | 2,000 receivers\n"));
        assert!(page.contains("- first line\n  second line\n"));
    }

    #[test]
    fn chart_links() {
        let page = render(&report(vec![fanout()]));
        assert!(page.contains("![Fan-out \\[p99\\]](b2-fanout.svg)\n"));

        let chart = Chart {
            file_stem: "b2 fan(out)".to_owned(),
            title: "Fan-out".to_owned(),
            x_label: String::new(),
            y_label: String::new(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            lines: Vec::new(),
        };
        assert_eq!(chart_link(&chart), "![Fan-out](b2%20fan%28out%29.svg)");
    }
}

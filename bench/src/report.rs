//! The results of one run: what each benchmark measured, as figures with
//! their floor and ratio, and the series drawn as charts.
//!
//! A run writes `report.json` (this model, serialised), `report.md` (a
//! table per benchmark) and one SVG file per chart into its output folder.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::system::Machine;

#[derive(Debug, Serialize)]
pub struct Report {
    /// `quick` or `full`.
    pub profile: String,
    /// Start of the run, seconds since the Unix epoch.
    pub started_at: u64,
    pub machine: Machine,
    /// Whether servers and load generators ran on separate cores.
    pub pinning: String,
    pub benchmarks: Vec<Benchmark>,
}

/// One benchmark, such as B2 fan-out.
#[derive(Debug, Serialize)]
pub struct Benchmark {
    /// Short id, `B0` to `B8`.
    pub id: String,
    /// Description of what it measures, for headings.
    pub title: String,
    pub figures: Vec<Figure>,
    pub charts: Vec<Chart>,
    /// Facts a reader needs to judge the figures: parameters, losses,
    /// anything that did not run and why.
    pub notes: Vec<String>,
}

/// One measured quantity of the product, beside the same quantity of its
/// floor when the benchmark has one.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub value: f64,
    /// The same measurement on the floor, in the same run.
    pub floor: Option<f64>,
    /// `value / floor`.
    pub ratio: Option<f64>,
    /// CPU the load generator used while this figure was measured, in
    /// percent of one core, because on two cores it can be the bottleneck.
    pub load_generator_cpu_percent: Option<f64>,
    pub target: Option<Target>,
}

/// A goal for a figure and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The goal in words, such as `ratio >= 0.5`.
    pub goal: String,
    pub met: bool,
    /// Whether a miss means messages were lost, repeated or skipped rather
    /// than slow. Such a miss makes the run exit with an error.
    pub correctness: bool,
}

/// A chart drawn to `<file_stem>.svg`.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub file_stem: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    Linear,
    Log10,
    /// Percentiles spread by their nines: x is a percentile such as 99.9,
    /// drawn at `-log10(1 - x / 100)`, so 90, 99 and 99.9 are evenly apart.
    Nines,
}

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub label: String,
    pub points: Vec<[f64; 2]>,
}

impl Figure {
    pub fn new(name: impl Into<String>, unit: impl Into<String>, value: f64) -> Figure {
        Figure {
            name: name.into(),
            unit: unit.into(),
            value,
            floor: None,
            ratio: None,
            load_generator_cpu_percent: None,
            target: None,
        }
    }

    /// Sets the floor and the ratio of this figure to it.
    pub fn with_floor(mut self, floor: f64) -> Figure {
        self.floor = Some(floor);
        self.ratio = (floor != 0.0).then(|| self.value / floor);
        self
    }

    pub fn with_generator_cpu(mut self, percent: f64) -> Figure {
        self.load_generator_cpu_percent = Some(percent);
        self
    }

    pub fn with_target(self, goal: impl Into<String>, met: bool) -> Figure {
        self.with_goal(goal.into(), met, false)
    }

    /// Sets a target that counts messages lost, repeated or skipped, whose
    /// miss fails the run.
    pub fn with_correctness_target(self, goal: impl Into<String>, met: bool) -> Figure {
        self.with_goal(goal.into(), met, true)
    }

    fn with_goal(mut self, goal: String, met: bool, correctness: bool) -> Figure {
        self.target = Some(Target {
            goal,
            met,
            correctness,
        });
        self
    }
}

impl Benchmark {
    /// Adds the messages a benchmark's sockets saw skipped (`gaps`) and
    /// repeated (`duplicates`) as figures whose miss fails the run. They are
    /// reported on their own because a repeat can hide a loss in a count of
    /// deliveries.
    pub fn add_order_figures(&mut self, gaps: u64, duplicates: u64) {
        self.figures
            .push(Figure::new("gaps", "", gaps as f64).with_correctness_target("0", gaps == 0));
        self.figures.push(
            Figure::new("duplicates", "", duplicates as f64)
                .with_correctness_target("0", duplicates == 0),
        );
    }

    pub fn new(id: &str, title: &str) -> Benchmark {
        Benchmark {
            id: id.to_owned(),
            title: title.to_owned(),
            figures: Vec::new(),
            charts: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Builds the entry of a benchmark that could not run, with the reason
    /// as its only note.
    pub fn failed(id: &str, title: &str, error: &anyhow::Error) -> Benchmark {
        let mut benchmark = Benchmark::new(id, title);
        benchmark.notes.push(format!("failed: {error:#}"));
        benchmark
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

impl Report {
    /// Names the figures, as `B3: name`, whose correctness target was missed.
    pub fn missed_correctness_targets(&self) -> Vec<String> {
        let mut missed = Vec::new();
        for benchmark in &self.benchmarks {
            for figure in &benchmark.figures {
                if let Some(target) = &figure.target
                    && target.correctness
                    && !target.met
                {
                    missed.push(format!("{}: {}", benchmark.id, figure.name));
                }
            }
        }
        missed
    }

    /// Writes `report.json`, `report.md` and the charts into `folder`.
    pub fn write(&self, folder: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("failed to create {}", folder.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        write_file(&folder.join("report.json"), &json)?;
        write_file(&folder.join("report.md"), &crate::markdown::render(self))?;
        for benchmark in &self.benchmarks {
            for chart in &benchmark.charts {
                let path = folder.join(format!("{}.svg", chart.file_stem));
                write_file(&path, &crate::plot::render_svg(chart))?;
            }
        }
        Ok(())
    }
}

fn write_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("failed to write {}", path.display()))
}

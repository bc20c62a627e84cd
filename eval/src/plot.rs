//! `rl-eval plot`: training curves of a results directory, as PNG and SVG.
//!
//! Layout read (docs/plots.md): `RUNS/<config>/<run>/{eval.jsonl,metrics.jsonl}`, where a
//! config is a directory such as `pass_rate-grpo` and a run is one seed of it (`seed-1`, ...,
//! any subdirectory holding one of the two files); a config directory that holds the files
//! itself is a config with one run. Each plot shows, per config, the mean over its runs at
//! every step with a min–max band over the runs.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (plotters' `ab_glyph` backend), so no
//! system font library or font file is needed.

use plotters::coord::Shift;
use plotters::prelude::*;
use rlcode_core::jsonl::Skipper;
use rlcode_core::{Error, ExitCode, JsonlReader, Line, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::PROGRAM;

/// Plot the runs of a results directory.
#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// Results directory: RUNS/<config>/<run>/{eval.jsonl,metrics.jsonl}.
    #[arg(long, value_name = "DIR")]
    pub runs: PathBuf,
    /// Where to write the plots (created if missing): NAME.png and NAME.svg per plot.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Image size in pixels, WIDTHxHEIGHT.
    #[arg(long, default_value = "960x600", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Report each invalid line on stderr and go on (exit 1 at the end) instead of stopping at
    /// the first one (exit 2).
    #[arg(long)]
    pub keep_going: bool,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let err = || format!("size \"{s}\": expected WIDTHxHEIGHT, each from 200 to 8000");
    let (w, h) = s.split_once('x').ok_or_else(err)?;
    let (w, h): (u32, u32) = (w.parse().map_err(|_| err())?, h.parse().map_err(|_| err())?);
    if !(200..=8000).contains(&w) || !(200..=8000).contains(&h) {
        return Err(err());
    }
    Ok((w, h))
}

/// Which file a plot reads, and what its x is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Eval,
    Metrics,
    /// eval.jsonl against the samples drawn for training up to each evaluated step (the sum of
    /// metrics.jsonl's `samples_drawn`, else `samples`, over the steps up to it).
    EvalBySamples,
}

/// The field [`Source::EvalBySamples`] adds to each eval line it can place.
const SAMPLES_X: &str = "_samples_drawn_before";

impl Source {
    fn file(self) -> &'static str {
        match self {
            Source::Eval | Source::EvalBySamples => "eval.jsonl",
            Source::Metrics => "metrics.jsonl",
        }
    }

    fn x_desc(self) -> &'static str {
        match self {
            Source::EvalBySamples => "training samples drawn",
            _ => "step",
        }
    }
}

/// One plot: where its points come from.
struct Spec {
    name: &'static str,
    title: &'static str,
    y_desc: &'static str,
    source: Source,
    /// The y of one line, or `None` where it has none (null, absent).
    y: fn(&Map<String, Value>) -> Option<f64>,
    /// Why the plot is skipped when no run has a single point.
    missing: &'static str,
}

/// `eval.jsonl`: `step`. `metrics.jsonl`: `train_step` (scripts/train.sh), else `step`.
fn x_of(source: Source, v: &Map<String, Value>) -> Option<f64> {
    let x = match source {
        Source::Eval => v.get("step"),
        Source::Metrics => v.get("train_step").or_else(|| v.get("step")),
        Source::EvalBySamples => v.get(SAMPLES_X),
    };
    x.and_then(Value::as_f64)
}

fn number(v: &Map<String, Value>, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64).filter(|x| x.is_finite())
}

/// eval.jsonl's `pass_at_k."1"`.
fn pass_at_1(v: &Map<String, Value>) -> Option<f64> {
    v.get("pass_at_k")
        .and_then(Value::as_object)
        .and_then(|p| number(p, "1"))
}

/// rl-update's `reward_density` when it is a number, else 1 − zero_advantage_groups / groups.
fn reward_density(v: &Map<String, Value>) -> Option<f64> {
    number(v, "reward_density").or_else(|| {
        let zero = number(v, "zero_advantage_groups")?;
        let groups = number(v, "groups")?;
        (groups > 0.0).then(|| 1.0 - zero / groups)
    })
}

const SPECS: &[Spec] = &[
    Spec {
        name: "pass_at_1",
        title: "held-out pass@1",
        y_desc: "pass@1",
        source: Source::Eval,
        y: pass_at_1,
        missing: "no eval.jsonl line has a numeric pass_at_k.\"1\"",
    },
    Spec {
        name: "pass_at_1_samples",
        title: "held-out pass@1 against training samples drawn",
        y_desc: "pass@1",
        source: Source::EvalBySamples,
        y: pass_at_1,
        missing: "no eval.jsonl line has a numeric pass_at_k.\"1\" at a step metrics.jsonl \
                  counts samples up to",
    },
    Spec {
        name: "heldout_pass_rate",
        title: "held-out mean pass rate",
        y_desc: "mean pass rate",
        source: Source::Eval,
        y: |v| number(v, "mean_pass_rate"),
        missing: "no eval.jsonl line has a numeric mean_pass_rate",
    },
    Spec {
        name: "reward_density",
        title: "reward density (groups with a non-zero advantage)",
        y_desc: "reward density",
        source: Source::Metrics,
        y: reward_density,
        missing: "no metrics.jsonl line has a numeric reward_density, nor zero_advantage_groups \
                  and groups",
    },
    Spec {
        name: "alignment",
        title: "alignment",
        y_desc: "alignment",
        source: Source::Metrics,
        y: |v| number(v, "alignment"),
        missing: "no metrics.jsonl line has a numeric alignment (rl-update --diagnostics)",
    },
];

/// One run: a directory with eval.jsonl and/or metrics.jsonl.
#[derive(Debug, Clone)]
pub struct Run {
    pub config: String,
    pub name: String,
    pub dir: PathBuf,
}

fn is_run(dir: &Path) -> bool {
    [Source::Eval, Source::Metrics]
        .iter()
        .any(|s| dir.join(s.file()).is_file())
}

use crate::layout::{name_of, sorted_subdirs as subdirs};

/// Every run under `runs`, sorted by config, then run name.
pub fn discover(runs: &Path) -> Result<Vec<Run>> {
    let mut out = Vec::new();
    for config in subdirs(runs)? {
        if is_run(&config) {
            out.push(Run {
                config: name_of(&config),
                name: ".".into(),
                dir: config.clone(),
            });
        }
        for run in subdirs(&config)? {
            if is_run(&run) {
                out.push(Run {
                    config: name_of(&config),
                    name: name_of(&run),
                    dir: run,
                });
            }
        }
    }
    Ok(out)
}

/// The lines of a run's file; an absent file has none.
fn read_lines(path: &Path, skipper: &mut Skipper) -> Result<Vec<Line>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let mut reader = JsonlReader::open(&[path.to_path_buf()])?;
    let mut lines = Vec::new();
    while let Some(item) = reader.next_record() {
        lines.extend(skipper.keep(item)?);
    }
    Ok(lines)
}

/// Each run's eval lines with [`SAMPLES_X`]: the training samples drawn before the evaluated
/// checkpoint (0 at step 0; a step beyond the run's metrics gets none).
fn eval_by_samples(
    evals: &[(Run, Vec<Line>)],
    metrics: &[(Run, Vec<Line>)],
) -> Vec<(Run, Vec<Line>)> {
    evals
        .iter()
        .zip(metrics)
        .map(|((run, lines), (_, m))| {
            let mut per_step: BTreeMap<u64, f64> = BTreeMap::new();
            for l in m {
                let step = l.value.get("train_step").and_then(Value::as_u64);
                let drawn =
                    number(&l.value, "samples_drawn").or_else(|| number(&l.value, "samples"));
                if let (Some(step), Some(drawn)) = (step, drawn) {
                    per_step.insert(step, drawn);
                }
            }
            let placed = lines
                .iter()
                .filter_map(|l| {
                    let step = l.value.get("step").and_then(Value::as_u64)?;
                    // Every step up to it must be counted, or the x would be too small.
                    if (1..=step).any(|s| !per_step.contains_key(&s)) {
                        return None;
                    }
                    let before: f64 = match step {
                        0 => 0.0,
                        _ => per_step.range(1..=step).map(|(_, d)| d).sum(),
                    };
                    let mut l = l.clone();
                    l.value.insert(SAMPLES_X.into(), Value::from(before));
                    Some(l)
                })
                .collect();
            (run.clone(), placed)
        })
        .collect()
}

/// One point of a config's curve: the mean, min and max over its runs at one x.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub x: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Runs with a value at this x.
    pub runs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub config: String,
    pub runs: usize,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plotted {
    pub name: String,
    pub title: String,
    /// The files written.
    pub files: Vec<String>,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

/// What `rl-eval plot` prints: one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub configs: Vec<String>,
    pub runs: usize,
    pub plots: Vec<Plotted>,
    pub skipped: Vec<Skipped>,
}

/// Curves of one plot: per config, its runs' (x, y) points pooled by x. A run with several
/// lines at one x (an appended log) counts its last.
fn series(spec: &Spec, runs: &[(Run, Vec<Line>)]) -> Vec<Series> {
    let mut by_config: BTreeMap<&str, (usize, BTreeMap<u64, Vec<f64>>)> = BTreeMap::new();
    for (run, lines) in runs {
        let entry = by_config.entry(&run.config).or_default();
        let mut last: BTreeMap<u64, f64> = BTreeMap::new();
        for l in lines {
            if let (Some(x), Some(y)) = (x_of(spec.source, &l.value), (spec.y)(&l.value)) {
                last.insert(x.to_bits(), y);
            }
        }
        if !last.is_empty() {
            entry.0 += 1;
        }
        for (x, y) in last {
            entry.1.entry(x).or_default().push(y);
        }
    }
    by_config
        .into_iter()
        .filter(|(_, (n, _))| *n > 0)
        .map(|(config, (n, points))| {
            let mut points: Vec<Point> = points
                .into_iter()
                .map(|(x, ys)| Point {
                    x: f64::from_bits(x),
                    mean: ys.iter().sum::<f64>() / ys.len() as f64,
                    min: ys.iter().copied().fold(f64::INFINITY, f64::min),
                    max: ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    runs: ys.len(),
                })
                .collect();
            points.sort_by(|a, b| a.x.total_cmp(&b.x));
            Series {
                config: config.to_string(),
                runs: n,
                points,
            }
        })
        .collect()
}

/// Distinguishable line colours (Tableau 10).
const COLORS: [RGBColor; 10] = [
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

/// Axis ranges with a margin; rates that fit in [0, 1] start at 0.
fn ranges(series: &[Series]) -> ((f64, f64), (f64, f64)) {
    let pts = series.iter().flat_map(|s| &s.points);
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for p in pts {
        x0 = x0.min(p.x);
        x1 = x1.max(p.x);
        y0 = y0.min(p.min);
        y1 = y1.max(p.max);
    }
    if x1 <= x0 {
        (x0, x1) = (x0 - 1.0, x0 + 1.0);
    }
    if y0 >= 0.0 && y1 <= 1.0 {
        y0 = 0.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let pad = (y1 - y0) * 0.08;
    let y0 = if y0 == 0.0 { 0.0 } else { y0 - pad };
    ((x0, x1), (y0, y1 + pad))
}

/// A tick label: integers without a decimal point (steps), others as plotters would.
fn tick(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return format!("{}", x as i64);
    }
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &Spec,
    series: &[Series],
    configs: &[String],
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("drawing {}: {e:?}", spec.name);
    root.fill(&WHITE).map_err(e)?;
    let ((x0, x1), (y0, y1)) = ranges(series);
    let mut chart = ChartBuilder::on(root)
        .caption(spec.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(spec.source.x_desc())
        .y_desc(spec.y_desc)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .x_label_formatter(&|x| tick(*x))
        .y_label_formatter(&|y| tick(*y))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(e)?;
    for s in series {
        // A config keeps its colour in every plot, whichever configs the plot has.
        let i = configs.iter().position(|c| *c == s.config).unwrap_or(0);
        let color = COLORS[i % COLORS.len()];
        if s.runs > 1 {
            let mut band: Vec<(f64, f64)> = s.points.iter().map(|p| (p.x, p.max)).collect();
            band.extend(s.points.iter().rev().map(|p| (p.x, p.min)));
            chart
                .draw_series(std::iter::once(Polygon::new(
                    band,
                    color.mix(0.18).filled(),
                )))
                .map_err(e)?;
        }
        let line: Vec<(f64, f64)> = s.points.iter().map(|p| (p.x, p.mean)).collect();
        let label = if s.runs > 1 {
            format!("{} (mean, min–max of {} runs)", s.config, s.runs)
        } else {
            format!("{} (1 run)", s.config)
        };
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
            });
        chart
            .draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

static FONT: std::sync::Once = std::sync::Once::new();

/// Make DejaVu Sans the "sans-serif" of every plot (once per process).
fn register_font() {
    FONT.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_err()
        {
            panic!("the embedded DejaVu Sans is not a valid font");
        }
    });
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(rlcode_core::paths::write_atomic(path, bytes)?)
}

/// The PNG of one plot, RGB 8-bit.
pub fn render_png(
    spec_name: &str,
    series: &[Series],
    configs: &[String],
    size: (u32, u32),
) -> Result<Vec<u8>> {
    register_font();
    let spec = spec_by_name(spec_name);
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw(&root, spec, series, configs).map_err(|m| Error::Other(anyhow::anyhow!(m)))?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, size.0, size.1);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| Error::Other(anyhow::anyhow!("encoding PNG: {e}")))?;
        w.write_image_data(&rgb)
            .map_err(|e| Error::Other(anyhow::anyhow!("encoding PNG: {e}")))?;
    }
    Ok(png_bytes)
}

/// The SVG of one plot.
pub fn render_svg(
    spec_name: &str,
    series: &[Series],
    configs: &[String],
    size: (u32, u32),
) -> Result<String> {
    register_font();
    let spec = spec_by_name(spec_name);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root, spec, series, configs).map_err(|m| Error::Other(anyhow::anyhow!(m)))?;
    }
    Ok(svg)
}

fn spec_by_name(name: &str) -> &'static Spec {
    SPECS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no plot named {name}"))
}

/// Read the runs, draw every plot that has data, print the summary.
pub fn run(args: &PlotArgs, output: impl Write) -> Result<ExitCode> {
    rlcode_core::cli::closed_stdout_is_success(run_inner(args, output))
}

fn run_inner(args: &PlotArgs, mut output: impl Write) -> Result<ExitCode> {
    let runs = discover(&args.runs)?;
    if runs.is_empty() {
        return Err(Error::Other(anyhow::anyhow!(
            "no runs under {}: expected {}/<config>/<run>/eval.jsonl or metrics.jsonl",
            args.runs.display(),
            args.runs.display()
        )));
    }
    let mut skipper = Skipper::new(PROGRAM, args.keep_going);
    let mut loaded: BTreeMap<&str, Vec<(Run, Vec<Line>)>> = BTreeMap::new();
    for source in [Source::Eval, Source::Metrics] {
        let mut v = Vec::new();
        for r in &runs {
            let lines = read_lines(&r.dir.join(source.file()), &mut skipper)?;
            v.push((r.clone(), lines));
        }
        loaded.insert(source.file(), v);
    }
    let by_samples = eval_by_samples(&loaded["eval.jsonl"], &loaded["metrics.jsonl"]);
    loaded.insert("eval-by-samples", by_samples);
    std::fs::create_dir_all(&args.out).map_err(|source| Error::Open {
        path: args.out.clone(),
        source,
    })?;
    let mut configs: Vec<String> = runs.iter().map(|r| r.config.clone()).collect();
    configs.dedup();
    let mut summary = Summary {
        configs,
        runs: runs.len(),
        plots: Vec::new(),
        skipped: Vec::new(),
    };
    for spec in SPECS {
        let key = match spec.source {
            Source::EvalBySamples => "eval-by-samples",
            other => other.file(),
        };
        let s = series(spec, &loaded[key]);
        if s.is_empty() {
            eprintln!("{PROGRAM}: note: no {} plot: {}", spec.name, spec.missing);
            summary.skipped.push(Skipped {
                name: spec.name.into(),
                reason: spec.missing.into(),
            });
            continue;
        }
        let png_path = args.out.join(format!("{}.png", spec.name));
        let svg_path = args.out.join(format!("{}.svg", spec.name));
        write_atomic(
            &png_path,
            &render_png(spec.name, &s, &summary.configs, args.size)?,
        )?;
        write_atomic(
            &svg_path,
            render_svg(spec.name, &s, &summary.configs, args.size)?.as_bytes(),
        )?;
        summary.plots.push(Plotted {
            name: spec.name.into(),
            title: spec.title.into(),
            files: vec![
                png_path.display().to_string(),
                svg_path.display().to_string(),
            ],
            series: s,
        });
    }
    serde_json::to_writer(&mut output, &summary).map_err(std::io::Error::from)?;
    output.write_all(b"\n")?;
    output.flush()?;
    if skipper.skipped() > 0 {
        eprintln!("{PROGRAM}: {} invalid lines skipped", skipper.skipped());
    }
    Ok(skipper.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(v: Value) -> Line {
        let Value::Object(value) = v else {
            panic!("an object")
        };
        Line {
            file: std::sync::Arc::from("f"),
            line: 1,
            value,
        }
    }

    fn run(config: &str, name: &str, lines: &[Value]) -> (Run, Vec<Line>) {
        (
            Run {
                config: config.into(),
                name: name.into(),
                dir: PathBuf::from(name),
            },
            lines.iter().cloned().map(line).collect(),
        )
    }

    fn eval_line(step: u64, p1: Value) -> Value {
        json!({"step": step, "label": "test", "pass_at_k": {"1": p1, "4": 0.9}, "mean_pass_rate": 0.5})
    }

    #[test]
    fn series_pool_runs_of_a_config_by_step() {
        let runs = [
            run(
                "a",
                "seed-1",
                &[eval_line(0, json!(0.1)), eval_line(10, json!(0.3))],
            ),
            run(
                "a",
                "seed-2",
                // Step 10 appears twice (an appended log): the last line counts.
                &[
                    eval_line(0, json!(0.2)),
                    eval_line(10, json!(0.9)),
                    eval_line(10, json!(0.5)),
                ],
            ),
            run(
                "b",
                "seed-1",
                &[eval_line(0, Value::Null), eval_line(10, json!(0.4))],
            ),
            run("c", "seed-1", &[json!({"step": 0})]),
        ];
        let s = series(spec_by_name("pass_at_1"), &runs);
        // c has no point at all: no series.
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].config.as_str(), s[0].runs), ("a", 2));
        let p = &s[0].points;
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].x, p[0].min, p[0].max, p[0].runs), (0.0, 0.1, 0.2, 2));
        assert!((p[0].mean - 0.15).abs() < 1e-12);
        assert_eq!((p[1].x, p[1].min, p[1].max), (10.0, 0.3, 0.5));
        // b's null at step 0 is no point.
        assert_eq!(s[1].points.len(), 1);
        assert_eq!((s[1].points[0].x, s[1].points[0].mean), (10.0, 0.4));
    }

    #[test]
    fn reward_density_prefers_the_field_and_falls_back_on_group_counts() {
        let m = |v: Value| line(v).value;
        assert_eq!(
            reward_density(&m(
                json!({"reward_density": 0.25, "groups": 4, "zero_advantage_groups": 0})
            )),
            Some(0.25)
        );
        assert_eq!(
            reward_density(&m(
                json!({"reward_density": null, "groups": 4, "zero_advantage_groups": 1})
            )),
            Some(0.75)
        );
        assert_eq!(
            reward_density(&m(json!({"groups": 0, "zero_advantage_groups": 0}))),
            None
        );
        assert_eq!(reward_density(&m(json!({"groups": null}))), None);
        // metrics.jsonl's x is train_step (scripts/train.sh), else rl-update's step.
        assert_eq!(
            x_of(Source::Metrics, &m(json!({"train_step": 3, "step": 0}))),
            Some(3.0)
        );
        assert_eq!(x_of(Source::Metrics, &m(json!({"step": 5}))), Some(5.0));
    }

    fn two_configs() -> (Vec<Series>, Vec<String>) {
        let runs = [
            run(
                "pass_rate-grpo",
                "seed-1",
                &[eval_line(0, json!(0.1)), eval_line(10, json!(0.3))],
            ),
            run(
                "pass_rate-grpo",
                "seed-2",
                &[eval_line(0, json!(0.1)), eval_line(10, json!(0.2))],
            ),
            run(
                "binary-grpo",
                "seed-1",
                &[eval_line(0, json!(0.1)), eval_line(10, json!(0.15))],
            ),
        ];
        let configs = vec!["binary-grpo".to_string(), "pass_rate-grpo".to_string()];
        (series(spec_by_name("pass_at_1"), &runs), configs)
    }

    #[test]
    fn png_decodes_and_has_text_in_the_title_band() {
        let (s, configs) = two_configs();
        let bytes = render_png("pass_at_1", &s, &configs, (640, 400)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (640, 400));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let px = |x: usize, y: usize| {
            let i = (y * 640 + x) * 3;
            (buf[i], buf[i + 1], buf[i + 2])
        };
        // The caption is drawn in black between the top margin and the plot area: dark
        // pixels there mean glyphs were rasterised from the embedded font.
        let dark = (0..40)
            .flat_map(|y| (0..640).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let (r, g, b) = px(x, y);
                r < 80 && g < 80 && b < 80
            })
            .count();
        assert!(dark > 50, "{dark} dark pixels in the title band");
        // The corner is background.
        assert_eq!(px(0, 399), (255, 255, 255));
        // The config colours appear (Tableau blue for the first config, orange for the second).
        let has = |c: (u8, u8, u8)| (0..400).any(|y| (0..640).any(|x| px(x, y) == c));
        assert!(has((31, 119, 180)) && has((255, 127, 14)));
    }

    #[test]
    fn svg_has_the_title_legend_and_curves() {
        let (s, configs) = two_configs();
        let svg = render_svg("pass_at_1", &s, &configs, (640, 400)).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("held-out pass@1"));
        assert!(svg.contains("pass_rate-grpo (mean, min–max of 2 runs)"));
        assert!(svg.contains("binary-grpo (1 run)"));
        assert!(svg.contains("<polyline") || svg.contains("<path"));
        assert!(svg.contains("<polygon"), "the min–max band");
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick(10.0), "10");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(-0.0001), "0");
        assert_eq!(tick(0.1 + 0.2), "0.3");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("800x500"), Ok((800, 500)));
        for bad in ["800", "x500", "10x10", "800x500x2", "axb"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    fn write(dir: &Path, rel: &str, lines: &[Value]) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let text: String = lines.iter().map(|v| format!("{v}\n")).collect();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn a_results_directory_gives_files_and_a_summary() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        for seed in [1, 2] {
            write(
                &runs,
                &format!("pass_rate-grpo/seed-{seed}/eval.jsonl"),
                &[
                    eval_line(0, json!(0.1)),
                    eval_line(10, json!(0.2 + seed as f64 / 10.0)),
                ],
            );
            write(
                &runs,
                &format!("pass_rate-grpo/seed-{seed}/metrics.jsonl"),
                &[json!({"train_step": 1, "step": 1, "groups": 4, "zero_advantage_groups": 1})],
            );
        }
        // A config directory holding the files itself is one run; hidden dirs are ignored.
        write(
            &runs,
            "binary-grpo/eval.jsonl",
            &[eval_line(0, json!(0.05))],
        );
        write(
            &runs,
            ".cache/seed-1/eval.jsonl",
            &[eval_line(0, json!(0.5))],
        );
        let found = discover(&runs).unwrap();
        let names: Vec<(String, String)> = found
            .iter()
            .map(|r| (r.config.clone(), r.name.clone()))
            .collect();
        assert_eq!(
            names,
            [
                ("binary-grpo".into(), ".".into()),
                ("pass_rate-grpo".into(), "seed-1".into()),
                ("pass_rate-grpo".into(), "seed-2".into())
            ]
        );

        let out = dir.path().join("plots");
        let args = PlotArgs {
            runs: runs.clone(),
            out: out.clone(),
            size: (480, 320),
            keep_going: false,
        };
        let mut stdout = Vec::new();
        assert_eq!(super::run(&args, &mut stdout).unwrap(), ExitCode::Success);
        let v: Value = serde_json::from_slice(&stdout).unwrap();
        assert_eq!(v["runs"], 3);
        let plotted: Vec<&str> = v["plots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            plotted,
            [
                "pass_at_1",
                "pass_at_1_samples",
                "heldout_pass_rate",
                "reward_density"
            ]
        );
        assert_eq!(v["skipped"][0]["name"], "alignment");
        for name in plotted {
            let png = std::fs::read(out.join(format!("{name}.png"))).unwrap();
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
            let svg = std::fs::read_to_string(out.join(format!("{name}.svg"))).unwrap();
            assert!(svg.starts_with("<svg"));
        }
        assert!(!out.join("alignment.png").exists());
        // reward density = 1 − 1/4 in both runs.
        assert_eq!(v["plots"][3]["series"][0]["points"][0]["mean"], 0.75);
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn pass_at_1_against_samples_sums_the_samples_drawn_before_each_evaluation() {
        let line = |v: Value| Line {
            file: "-".into(),
            line: 1,
            value: v.as_object().unwrap().clone(),
        };
        let run = Run {
            config: "c".into(),
            name: "seed-1".into(),
            dir: PathBuf::from("."),
        };
        let evals = vec![(
            run.clone(),
            [0, 2, 4]
                .iter()
                .map(|s| line(json!({"step": s, "pass_at_k": {"1": 0.5}})))
                .collect::<Vec<_>>(),
        )];
        // Steps 1-3 counted (64, 64, then 40 with dynamic sampling's own count); step 4 missing.
        let metrics = vec![(
            run,
            vec![
                line(json!({"train_step": 1, "samples_drawn": 64})),
                line(json!({"train_step": 2, "samples": 64})),
                line(json!({"train_step": 3, "samples_drawn": 40, "samples": 8})),
            ],
        )];
        let placed = eval_by_samples(&evals, &metrics);
        let xs: Vec<(u64, f64)> = placed[0]
            .1
            .iter()
            .map(|l| {
                (
                    l.value["step"].as_u64().unwrap(),
                    x_of(Source::EvalBySamples, &l.value).unwrap(),
                )
            })
            .collect();
        assert_eq!(xs, [(0, 0.0), (2, 128.0)], "step 4 has no count for step 4");
    }

    #[test]
    fn an_empty_results_directory_and_a_bad_line_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let args = |keep_going| PlotArgs {
            runs: dir.path().join("runs"),
            out: dir.path().join("out"),
            size: (480, 320),
            keep_going,
        };
        std::fs::create_dir_all(dir.path().join("runs/empty-config")).unwrap();
        let e = super::run(&args(false), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no runs under"), "{e}");
        let p = dir.path().join("runs/c/seed-1/eval.jsonl");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(
            &p,
            format!("{}\n{{\"step\":1,\"pass_at", eval_line(0, json!(0.1))),
        )
        .unwrap();
        let e = super::run(&args(false), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("eval.jsonl:2"), "{e}");
        let mut out = Vec::new();
        assert_eq!(
            super::run(&args(true), &mut out).unwrap(),
            ExitCode::Skipped
        );
        assert!(dir.path().join("out/pass_at_1.png").exists());
    }
}

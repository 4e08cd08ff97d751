//! The run's two pictures, as SVG (`--plot DIR`; docs/performance.md shows
//! them beside the table):
//!
//! - `e2e-latency.svg`: the distribution of single-change latency (from
//!   the RTM_SETLINK request, and from the kernel's announcement) against
//!   the harness floor, one colour per port count: what fraction of samples
//!   took at most x µs;
//! - `e2e-cpu.svg`: the daemon's CPU per admin change in the storm, by port
//!   count, split into the `netlink` thread and the rest.

use std::path::Path;

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::Column;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 520;

/// Writes both pictures into `dir`; returns their paths.
pub fn write(dir: &Path, label: &str, cols: &[Column]) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let latency = dir.join("e2e-latency.svg");
    let cpu = dir.join("e2e-cpu.svg");
    latency_cdf(&latency, label, cols).map_err(|e| format!("{}: {e}", latency.display()))?;
    cpu_bars(&cpu, label, cols).map_err(|e| format!("{}: {e}", cpu.display()))?;
    Ok(vec![
        latency.display().to_string(),
        cpu.display().to_string(),
    ])
}

/// (value, fraction of samples at or below it) for every sample.
fn cdf(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| *x > 0.0).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    v.iter()
        .enumerate()
        .map(|(i, x)| (*x, (i + 1) as f64 / n))
        .collect()
}

type Failed = Box<dyn std::error::Error>;

fn latency_cdf(path: &Path, label: &str, cols: &[Column]) -> Result<(), Failed> {
    let all = cols
        .iter()
        .flat_map(|c| {
            c.latency
                .iter()
                .chain(&c.latency_from_kernel)
                .chain(&c.floor)
        })
        .copied()
        .filter(|x| *x > 0.0);
    let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if hi <= 0.0 {
        return Err("no latency samples".into());
    }
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{label}: one change at a time, latency to the STATE_DB write"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("µs (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .y_desc("fraction of samples at or below")
        .draw()?;
    for (i, c) in cols.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let solid = colour.stroke_width(2);
        chart
            .draw_series(LineSeries::new(cdf(&c.latency_from_kernel), solid))?
            .label(format!("{} ports: kernel announces → STATE_DB", c.ports))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], solid));
        let thin = colour.stroke_width(1);
        chart
            .draw_series(LineSeries::new(cdf(&c.latency), thin))?
            .label(format!("{} ports: RTM_SETLINK sent → STATE_DB", c.ports))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], thin));
        chart
            .draw_series(DashedLineSeries::new(cdf(&c.floor), 6, 4, solid))?
            .label(format!(
                "{} ports: harness floor (own HSET → notification)",
                c.ports
            ))
            .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 20, y)], 6, 4, solid));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn cpu_bars(path: &Path, label: &str, cols: &[Column]) -> Result<(), Failed> {
    let per = |x: f64, c: &Column| x / c.changes.max(1) as f64;
    let top = cols
        .iter()
        .map(|c| per(c.cpu_us, c))
        .fold(0.0f64, f64::max)
        .max(1.0);
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = cols.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{label}: daemon CPU per admin change in the storm"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..top * 1.25)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.max(1))
        .x_label_formatter(&|x| {
            let i = x.round();
            cols.get(i as usize)
                .filter(|_| (x - i).abs() < 1e-6 && i >= 0.0)
                .map_or(String::new(), |c| format!("{} ports", c.ports))
        })
        .y_desc("µs of CPU per change (schedstat)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let netlink = Palette99::pick(0).to_rgba();
    let rest = Palette99::pick(1).to_rgba();
    let bar = |i: usize, from: f64, to: f64, colour: RGBAColor| {
        let x = i as f64;
        Rectangle::new([(x - 0.3, from), (x + 0.3, to)], colour.filled())
    };
    chart
        .draw_series(
            cols.iter()
                .enumerate()
                .map(|(i, c)| bar(i, 0.0, per(c.cpu_netlink_us, c), netlink)),
        )?
        .label("thread `netlink`")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], netlink.filled()));
    chart
        .draw_series(
            cols.iter()
                .enumerate()
                .map(|(i, c)| bar(i, per(c.cpu_netlink_us, c), per(c.cpu_us, c), rest)),
        )?
        .label("the other threads (writer, runtime)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], rest.filled()));
    chart.draw_series(cols.iter().enumerate().map(|(i, c)| {
        Text::new(
            format!("{:.1} µs", per(c.cpu_us, c)),
            (i as f64 - 0.12, per(c.cpu_us, c) + top * 0.03),
            ("sans-serif", 14),
        )
    }))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

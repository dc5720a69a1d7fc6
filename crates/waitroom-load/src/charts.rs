//! SVG charts of a run (plotters' SVG backend only: no fonts or system libraries needed).
//! Everything is drawn from [`Series`], which `report.json` carries too: the data behind every
//! chart is in the report.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::LoadError;
use crate::metrics::{HistogramBucket, Series};

const CHART_SIZE: (u32, u32) = (1000, 600);
const CAPTION_FONT: (&str, i32) = ("sans-serif", 22);

/// File names, in the order they are written.
pub const CHART_FILES: [&str; 5] = [
    "active.svg",
    "queue.svg",
    "eta.svg",
    "latency-join.svg",
    "latency-poll.svg",
];

type DrawResult = Result<(), String>;

/// A line of a time chart: legend label, points, colour.
type Line<'a> = (&'a str, &'a [(f64, f64)], RGBColor);

fn chart_error(path: &Path, error: String) -> LoadError {
    LoadError::Output(format!("{}: {error}", path.display()))
}

/// Writes every chart into `out_dir`; returns the paths.
///
/// # Errors
/// [`LoadError::Output`] if a chart cannot be drawn or written.
pub fn write_charts(series: &Series, out_dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let capacity = f64::from(series.capacity);
    let active_client = as_steps(&series.active_client);
    let active_admitted = as_steps(&series.active_admitted);
    let waiting_client = as_steps(&series.waiting_client);
    let mut written = Vec::new();
    let mut draw = |name: &str, result: &dyn Fn(&Path) -> DrawResult| {
        let path = out_dir.join(name);
        result(&path).map_err(|error| chart_error(&path, error))?;
        written.push(path);
        Ok::<(), LoadError>(())
    };
    draw(CHART_FILES[0], &|path| {
        time_chart(
            path,
            "ACTIVE sessions over time",
            "ACTIVE",
            &[
                (
                    "proven by clients (seen ACTIVE → complete sent)",
                    &active_client,
                    BLUE,
                ),
                ("admittedAt → complete sent", &active_admitted, MAGENTA),
                ("server stats (activeCount)", &series.active_server, GREEN),
            ],
            Some(("capacity", capacity)),
        )
    })?;
    draw(CHART_FILES[1], &|path| {
        time_chart(
            path,
            "Queue length over time",
            "WAITING",
            &[
                ("this run's users proven waiting", &waiting_client, BLUE),
                ("server stats (waitingCount)", &series.waiting_server, GREEN),
            ],
            None,
        )
    })?;
    draw(CHART_FILES[2], &|path| eta_chart(path, &series.eta_scatter))?;
    draw(CHART_FILES[3], &|path| {
        histogram_chart(path, "Join latency", &series.join_latency_histogram)
    })?;
    draw(CHART_FILES[4], &|path| {
        histogram_chart(path, "Poll latency", &series.poll_latency_histogram)
    })?;
    Ok(written)
}

/// A step function drawn as a line: hold each value until the next point.
fn as_steps(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut steps = Vec::with_capacity(points.len() * 2);
    for (index, &(at, value)) in points.iter().enumerate() {
        if index > 0 {
            steps.push((at, points[index - 1].1));
        }
        steps.push((at, value));
    }
    steps
}

fn upper_bound(values: impl Iterator<Item = f64>, floor: f64) -> f64 {
    let max = values.fold(floor, f64::max);
    if max > 0.0 { max * 1.05 } else { 1.0 }
}

fn time_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    lines: &[Line<'_>],
    reference: Option<(&str, f64)>,
) -> DrawResult {
    let x_max = upper_bound(
        lines
            .iter()
            .flat_map(|line| line.1.iter().map(|point| point.0)),
        0.0,
    );
    let y_max = upper_bound(
        lines
            .iter()
            .flat_map(|line| line.1.iter().map(|point| point.1)),
        reference.map_or(0.0, |(_, value)| value),
    );
    let root = SVGBackend::new(path, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|error| error.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, CAPTION_FONT)
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|error| error.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc(y_label)
        .draw()
        .map_err(|error| error.to_string())?;
    // The reference first, thick and pale, so series running along it stay visible.
    if let Some((label, value)) = reference {
        chart
            .draw_series(LineSeries::new(
                [(0.0, value), (x_max, value)],
                RED.mix(0.4).stroke_width(6),
            ))
            .map_err(|error| error.to_string())?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    for &(label, points, color) in lines {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(1),
            ))
            .map_err(|error| error.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|error| error.to_string())?;
    root.present().map_err(|error| error.to_string())
}

fn eta_chart(path: &Path, points: &[(f64, f64)]) -> DrawResult {
    let limit = upper_bound(points.iter().flat_map(|&(x, y)| [x, y]), 0.0);
    let root = SVGBackend::new(path, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|error| error.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Estimated vs actual wait", CAPTION_FONT)
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..limit, 0.0..limit)
        .map_err(|error| error.to_string())?;
    chart
        .configure_mesh()
        .x_desc("estimatedWaitSeconds shown")
        .y_desc("actual wait, s (admittedAt − poll)")
        .draw()
        .map_err(|error| error.to_string())?;
    chart
        .draw_series(
            points
                .iter()
                .map(|&point| Circle::new(point, 2, BLUE.mix(0.4).filled())),
        )
        .map_err(|error| error.to_string())?
        .label("poll")
        .legend(|(x, y)| Circle::new((x + 10, y), 3, BLUE.filled()));
    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (limit, limit)], RED))
        .map_err(|error| error.to_string())?
        .label("exact")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|error| error.to_string())?;
    root.present().map_err(|error| error.to_string())
}

fn histogram_chart(path: &Path, title: &str, buckets: &[HistogramBucket]) -> DrawResult {
    let x_max = upper_bound(buckets.iter().map(|bucket| bucket.upper_ms), 0.0);
    let y_max = upper_bound(buckets.iter().map(|bucket| bucket.count as f64), 0.0);
    let root = SVGBackend::new(path, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|error| error.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title} (last bar holds the slowest 0.1 %)"),
            CAPTION_FONT,
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|error| error.to_string())?;
    chart
        .configure_mesh()
        .x_desc("latency, ms")
        .y_desc("requests")
        .draw()
        .map_err(|error| error.to_string())?;
    chart
        .draw_series(buckets.iter().map(|bucket| {
            Rectangle::new(
                [
                    (bucket.lower_ms, 0.0),
                    (bucket.upper_ms, bucket.count as f64),
                ],
                BLUE.mix(0.7).filled(),
            )
        }))
        .map_err(|error| error.to_string())?;
    root.present().map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_hold_the_previous_value() {
        assert_eq!(
            as_steps(&[(0.0, 1.0), (2.0, 3.0)]),
            vec![(0.0, 1.0), (2.0, 1.0), (2.0, 3.0)]
        );
    }

    #[test]
    fn draws_every_chart_even_without_data() {
        let directory = tempfile::tempdir().unwrap();
        let empty = Series {
            capacity: 5,
            active_client: Vec::new(),
            active_admitted: Vec::new(),
            active_server: Vec::new(),
            waiting_client: Vec::new(),
            waiting_server: Vec::new(),
            eta_scatter: Vec::new(),
            join_latency_histogram: Vec::new(),
            poll_latency_histogram: Vec::new(),
        };
        let written = write_charts(&empty, directory.path()).unwrap();
        assert_eq!(written.len(), CHART_FILES.len());
        let full = Series {
            active_client: vec![(0.0, 1.0), (1.0, 5.0), (2.0, 0.0)],
            active_server: vec![(0.5, 4.0), (1.5, 5.0)],
            eta_scatter: vec![(3.0, 2.5), (10.0, 12.0)],
            join_latency_histogram: vec![HistogramBucket {
                lower_ms: 0.0,
                upper_ms: 1.5,
                count: 7,
            }],
            ..empty
        };
        for path in write_charts(&full, directory.path()).unwrap() {
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.starts_with("<svg"), "{}", path.display());
        }
    }
}

//! Charts for the dashboard, rendered on the server as SVG by plotters: a metric's trend over jobs with the
//! regression threshold drawn, and a step's pass rate over builds.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// The chart area both charts draw on: x from -0.5 to n - 0.5 (one place per job or build), y from 0.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A 720×260 SVG: `title`, `n` places on x, y up to `y_max`, `y_area` pixels for the y labels; `draw` adds the
/// mesh and the series, then the legend goes on top.
fn render(
    title: &str,
    n: usize,
    y_max: f64,
    y_area: u32,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> Option<()>,
) -> Option<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 260)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(y_area)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5).max(0.5), 0f64..y_max)
            .ok()?;
        draw(&mut chart)?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .ok()?;
        root.present().ok()?;
    }
    Some(svg)
}

/// One point of a trend: when (Unix ms), the value, and whether it belongs to the build the page is about.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Point {
    pub at_ms: u64,
    pub value: f64,
    pub mine: bool,
}

/// A line chart of `points` in time order (x: the job's place in the series, oldest first), this build's points
/// filled, and `threshold` (a value below which, or above for latencies, a job regressed) as a red line.
/// An empty series gives no chart.
pub(super) fn trend(
    title: &str,
    unit: &str,
    points: &[Point],
    threshold: Option<f64>,
) -> Option<String> {
    if points.is_empty() {
        return None;
    }
    let max = points
        .iter()
        .map(|p| p.value)
        .chain(threshold)
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let n = points.len();
    render(title, n, max, 64, |chart| {
        chart
            .configure_mesh()
            .x_desc("jobs, oldest first")
            .y_desc(unit)
            .x_labels(n.min(10))
            .x_label_formatter(&|x| format!("{}", x.round() as i64 + 1))
            .draw()
            .ok()?;
        let series: Vec<(f64, f64)> = points
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64, p.value))
            .collect();
        chart
            .draw_series(LineSeries::new(series.clone(), BLUE.mix(0.6)))
            .ok()?
            .label(unit)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(points.iter().enumerate().map(|(i, p)| {
                let style = if p.mine {
                    BLUE.filled()
                } else {
                    WHITE.filled()
                };
                Circle::new((i as f64, p.value), 4, style)
            }))
            .ok()?;
        chart
            .draw_series(
                points
                    .iter()
                    .enumerate()
                    .map(|(i, p)| Circle::new((i as f64, p.value), 4, BLUE)),
            )
            .ok()?;
        if let Some(t) = threshold {
            chart
                .draw_series(LineSeries::new(
                    vec![(-0.5, t), (n as f64 - 0.5, t)],
                    RED.stroke_width(2),
                ))
                .ok()?
                .label("regression threshold")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        }
        Some(())
    })
}

/// Pass rate (0-100 %) of each step (one line each) over builds in the order they first ran (x: the build's
/// place, `labels[i]` under it); `mine` is the index of the page's build, marked by a vertical line.
pub(super) fn pass_rates(
    title: &str,
    labels: &[String],
    steps: &[(String, Vec<Option<f64>>)],
    mine: Option<usize>,
) -> Option<String> {
    if labels.is_empty() || steps.is_empty() {
        return None;
    }
    let n = labels.len();
    render(title, n, 105.0, 48, |chart| {
        chart
            .configure_mesh()
            .x_desc("builds, oldest first")
            .y_desc("pass rate %")
            .x_labels(n.min(10))
            .x_label_formatter(&|x| {
                labels
                    .get(x.round().max(0.0) as usize)
                    .cloned()
                    .unwrap_or_default()
            })
            .draw()
            .ok()?;
        if let Some(m) = mine {
            chart
                .draw_series(LineSeries::new(
                    vec![(m as f64, 0.0), (m as f64, 105.0)],
                    BLACK.mix(0.3).stroke_width(6),
                ))
                .ok()?;
        }
        for (i, (name, rates)) in steps.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = rates
                .iter()
                .enumerate()
                .filter_map(|(x, r)| r.map(|r| (x as f64, r)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .ok()?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .ok()?;
        }
        Some(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trend_is_an_svg_with_its_points_and_threshold_and_nothing_for_no_data() {
        let pts: Vec<Point> = (0..5)
            .map(|i| Point {
                at_ms: i,
                value: 1000.0 + i as f64 * 10.0,
                mine: i >= 3,
            })
            .collect();
        let svg = trend("read IOPS, X1", "IOPS", &pts, Some(780.0)).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(
            svg.contains("read IOPS, X1") && svg.contains("regression threshold"),
            "{svg}"
        );
        assert_eq!(
            svg.matches("<circle").count(),
            10,
            "each point drawn (fill and outline)"
        );
        assert!(trend("x", "IOPS", &[], None).is_none());
        let labels = vec!["2.0.0".to_string(), "2.1.0".to_string()];
        let svg = pass_rates(
            "pass rate, X1",
            &labels,
            &[("self-test".into(), vec![Some(100.0), Some(50.0)])],
            Some(1),
        )
        .unwrap();
        assert!(
            svg.contains("self-test") && svg.contains("2.1.0") && svg.contains("pass rate %"),
            "{svg}"
        );
        assert!(pass_rates("x", &labels, &[], None).is_none());
    }
}

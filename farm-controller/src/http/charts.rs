//! Charts for the dashboard, rendered on the server as SVG by plotters: a metric's trend over jobs with the
//! regression threshold drawn, and a step's pass rate over builds.

use plotters::prelude::*;

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
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 260)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let max = points
            .iter()
            .map(|p| p.value)
            .chain(threshold)
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.15;
        let n = points.len();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5).max(0.5), 0f64..max)
            .ok()?;
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
    }
}

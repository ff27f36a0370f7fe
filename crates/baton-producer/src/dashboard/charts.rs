//! Pictures drawn as inline SVG, so they need no script and nothing from elsewhere: bar charts of
//! the overview, and a project's chains as lanes of sessions with their forks.

use std::fmt::Write;

use baton_core::Source;
use baton_ledger::Transition;

/// The last this many links of a chain are drawn; the lane says how many came before.
const LANE_NODES: usize = 24;

/// A bar chart of `values`, oldest first, labelled for screen readers with `label`.
pub(crate) fn bars(values: &[f64], label: &str) -> String {
    let (width, height) = (480.0, 120.0);
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let step = width / values.len().max(1) as f64;
    let mut svg = format!(
        r#"<svg role="img" aria-label="{}" viewBox="0 0 {width} {}" width="{width}" height="{}">"#,
        escape(label),
        height + 16.0,
        height + 16.0
    );
    for (i, v) in values.iter().enumerate() {
        let h = if max > 0.0 { v / max * height } else { 0.0 };
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#0b57d0"><title>{v}</title></rect>"##,
            i as f64 * step,
            height - h,
            (step - 1.0).max(1.0)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="0" y="{}" fill="#111">max {max}</text></svg>"##,
        height + 14.0
    );
    svg
}

/// A project's chains, one lane each (`label`, links oldest first): a node per session a run left,
/// a ✕ for a reset or a fallback, and a line from the session a fork branched from to the fork.
pub(crate) fn session_graph(lanes: &[(String, Vec<Transition>)]) -> String {
    let (dx, dy, left, top) = (110.0, 64.0, 150.0, 28.0);
    let widest = lanes
        .iter()
        .map(|(_, l)| l.len().min(LANE_NODES))
        .max()
        .unwrap_or(0);
    let width = left + dx * widest as f64 + 40.0;
    let height = top + dy * lanes.len() as f64;
    let mut places: Vec<(String, f64, f64)> = Vec::new();
    let mut edges = String::new();
    let mut nodes = String::new();
    for (row, (label, links)) in lanes.iter().enumerate() {
        let y = top + dy * row as f64;
        let skipped = links.len().saturating_sub(LANE_NODES);
        let _ = write!(
            nodes,
            r##"<text x="4" y="{}" fill="#111">{}</text>"##,
            y + 4.0,
            escape(label)
        );
        if skipped > 0 {
            let _ = write!(
                nodes,
                r##"<text x="4" y="{}" fill="#555">{skipped} earlier</text>"##,
                y + 18.0
            );
        }
        let mut previous: Option<(f64, f64)> = None;
        for (i, t) in links.iter().skip(skipped).enumerate() {
            let x = left + dx * i as f64;
            if let Some((px, py)) = previous {
                let _ = write!(
                    edges,
                    r##"<line x1="{px}" y1="{py}" x2="{x}" y2="{y}" stroke="#999"/>"##
                );
            }
            if t.source == Source::Fork
                && let Some((_, fx, fy)) = places
                    .iter()
                    .find(|(s, _, _)| Some(s.as_str()) == t.old_session_id.as_deref())
            {
                let _ = write!(
                    edges,
                    r##"<line x1="{fx}" y1="{fy}" x2="{x}" y2="{y}" stroke="#0a7d28" stroke-dasharray="4 3"><title>forked</title></line>"##
                );
            }
            match &t.new_session_id {
                Some(session) => {
                    let short: String = session.chars().take(8).collect();
                    let _ = write!(
                        nodes,
                        r##"<a href="/sessions/{id}"><circle cx="{x}" cy="{y}" r="7" fill="{fill}"><title>{id} ({source})</title></circle><text x="{}" y="{}" fill="#111">{}</text><text x="{}" y="{}" fill="#555">{source}</text></a>"##,
                        x - 24.0,
                        y + 20.0,
                        escape(&short),
                        x - 24.0,
                        y + 32.0,
                        id = escape(session),
                        source = t.source.as_str(),
                        fill = if t.source == Source::Fork {
                            "#0a7d28"
                        } else {
                            "#0b57d0"
                        },
                    );
                    places.push((session.to_string(), x, y));
                }
                None => {
                    let _ = write!(
                        nodes,
                        r##"<text x="{}" y="{}" fill="#b00020" font-size="16">✕<title>{}</title></text><text x="{}" y="{}" fill="#b00020">{}</text>"##,
                        x - 6.0,
                        y + 6.0,
                        t.source.as_str(),
                        x - 24.0,
                        y + 24.0,
                        t.source.as_str()
                    );
                }
            }
            previous = Some((x, y));
        }
    }
    format!(
        r#"<svg role="img" aria-label="The project's session chains" viewBox="0 0 {width} {height}" width="{width}" height="{height}">{edges}{nodes}</svg>"#
    )
}

/// Text for SVG and HTML: the five characters that could end it escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value_and_escape_the_label() {
        let svg = bars(&[0.0, 2.0, 4.0], "a <b>");
        assert!(svg.contains(r#"aria-label="a &lt;b&gt;""#), "{svg}");
        assert!(
            svg.contains(r#"height="120.0""#),
            "the largest bar is full height: {svg}"
        );
        assert_eq!(svg.matches("<rect").count(), 3);
    }
}

//! A scenario's figures: table rows (each beside its anchor and the ratio
//! to it) and the JSON written under target/bench/.

use serde_json::{Value, json};

/// One printed figure.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: String,
    pub value: String,
    /// What it is compared with: Istio's published number, DESIGN.md's
    /// target, or the floor measured in the same run.
    pub anchor: String,
    /// value / anchor, when both are numbers of one unit.
    pub ratio: Option<f64>,
}

impl Row {
    pub fn new(figure: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            figure: figure.into(),
            value: value.into(),
            anchor: String::new(),
            ratio: None,
        }
    }

    pub fn against(mut self, anchor: impl Into<String>, ratio: Option<f64>) -> Row {
        self.anchor = anchor.into();
        self.ratio = ratio.filter(|r| r.is_finite());
        self
    }
}

/// What one scenario measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: &'static str,
    pub title: String,
    pub rows: Vec<Row>,
    pub json: Value,
}

impl Outcome {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "title": self.title,
            "figures": self.json,
            "rows": self.rows.iter().map(|row| json!({
                "figure": row.figure, "value": row.value, "anchor": row.anchor, "ratio": row.ratio,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Prints the outcomes as one table.
pub fn print_table(outcomes: &[Outcome]) {
    let width = |pick: fn(&Row) -> &str| {
        outcomes
            .iter()
            .flat_map(|o| o.rows.iter())
            .map(|row| pick(row).len())
            .max()
            .unwrap_or(0)
    };
    let (figure_w, value_w) = (width(|r| &r.figure).max(6), width(|r| &r.value).max(5));
    for outcome in outcomes {
        println!("\n{} {}", outcome.id, outcome.title);
        for row in &outcome.rows {
            let ratio = row
                .ratio
                .map(|r| format!("  (x{r:.2})"))
                .unwrap_or_default();
            let anchor = if row.anchor.is_empty() {
                String::new()
            } else {
                format!("  vs {}", row.anchor)
            };
            println!(
                "  {:figure_w$}  {:>value_w$}{anchor}{ratio}",
                row.figure, row.value
            );
        }
    }
}

/// `median / p99` in whole milliseconds, as the table shows timings.
pub fn median_p99_ms(summary: &perf::report::Summary) -> String {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    format!("{:.0} / {:.0}", ms(summary.median), ms(summary.p99))
}

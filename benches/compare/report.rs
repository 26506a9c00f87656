//! What the run found: every measurement with its scenario, printed as it comes in, then as a
//! markdown table (ratios against our column) and optionally as JSON.

use std::fmt::Write as _;

use crate::harness::{ROLES, Role, median};

pub struct Record {
    pub scenario: String,
    pub implementation: String,
    pub role: Role,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub samples: Vec<f64>,
}

impl Record {
    pub fn median(&self) -> f64 {
        median(&self.samples)
    }
}

/// Every measurement of the run, plus notes per scenario.
#[derive(Default)]
pub struct Report {
    pub records: Vec<Record>,
    notes: Vec<(String, String)>,
}

impl Report {
    pub fn add(
        &mut self,
        scenario: &str,
        role: Role,
        implementation: &str,
        unit: &'static str,
        higher_is_better: bool,
        samples: Vec<f64>,
    ) {
        let rec = Record {
            scenario: scenario.to_owned(),
            implementation: implementation.to_owned(),
            role,
            unit,
            higher_is_better,
            samples,
        };
        eprintln!(
            "  {:<62} {:<40} {:>9} {} (n={})",
            rec.scenario,
            rec.implementation,
            fmt_num(rec.median()),
            rec.unit,
            rec.samples.len()
        );
        self.records.push(rec);
    }

    pub fn note(&mut self, scenario: &str, note: String) {
        self.notes.push((scenario.to_owned(), note));
    }

    pub fn find(&self, scenario: &str, role: Role) -> Option<&Record> {
        self.records
            .iter()
            .find(|r| r.scenario == scenario && r.role == role)
    }

    /// A markdown table: one row per scenario, a column per role, ratios in parentheses.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| scenario | unit | process-transport | tokio::process | std::process | floor / ceiling | note |\n\
             |---|---|---:|---:|---:|---:|---|\n",
        );
        let mut scenarios: Vec<&str> = Vec::new();
        for r in &self.records {
            if !scenarios.contains(&r.scenario.as_str()) {
                scenarios.push(&r.scenario);
            }
        }
        for s in scenarios {
            let unit = self
                .records
                .iter()
                .find(|r| r.scenario == s)
                .map_or("", |r| r.unit);
            let mut row = format!("| {s} | {unit} |");
            for role in ROLES {
                let _ = write!(row, " {} |", self.cell(s, role));
            }
            let notes: Vec<&str> = self
                .notes
                .iter()
                .filter(|(sc, _)| sc == s)
                .map(|(_, n)| n.as_str())
                .collect();
            let _ = writeln!(row, " {} |", notes.join("; "));
            out.push_str(&row);
        }
        out
    }

    fn cell(&self, scenario: &str, role: Role) -> String {
        let Some(r) = self.find(scenario, role) else {
            return "—".into();
        };
        let ours = self.find(scenario, Role::Ours).map(Record::median);
        let value = fmt_num(r.median());
        let name = match role {
            Role::Floor => format!("{}: ", r.implementation),
            _ => String::new(),
        };
        match ours {
            Some(o) if role != Role::Ours => {
                let ratio = if r.higher_is_better {
                    o / r.median()
                } else {
                    r.median() / o
                };
                format!("{name}{value} ({ratio:.2}×)")
            }
            _ => format!("{name}{value}"),
        }
    }

    pub fn json(&self) -> String {
        let items: Vec<String> = self
            .records
            .iter()
            .map(|r| {
                let samples: Vec<String> = r.samples.iter().map(|v| json_num(*v)).collect();
                format!(
                    "{{\"scenario\":{},\"implementation\":{},\"unit\":{},\"median\":{},\"samples\":[{}]}}",
                    json_str(&r.scenario),
                    json_str(&r.implementation),
                    json_str(r.unit),
                    json_num(r.median()),
                    samples.join(",")
                )
            })
            .collect();
        format!("[\n{}\n]\n", items.join(",\n"))
    }
}

fn json_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

pub fn fmt_num(v: f64) -> String {
    match v.abs() {
        x if x >= 100.0 => format!("{v:.0}"),
        x if x >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

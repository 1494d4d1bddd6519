//! The results table (Markdown) and the raw numbers (JSON lines).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use serde_json::Value;

pub struct Row {
    pub benchmark: String,
    pub berth: String,
    pub peer: String,
    pub ratio: String,
    pub goal: String,
    pub met: String,
}

pub struct Report {
    rows: Vec<Row>,
    json_out: Option<PathBuf>,
}

impl Report {
    pub fn new(json_out: Option<PathBuf>) -> Self {
        Self { rows: Vec::new(), json_out }
    }

    /// Adds a row and prints it at once, so a long run shows progress.
    pub fn row(&mut self, row: Row) {
        println!(
            "RESULT | {} | {} | {} | {} | {} | {} |",
            row.benchmark, row.berth, row.peer, row.ratio, row.goal, row.met
        );
        self.rows.push(row);
    }

    /// Appends one raw measurement to the JSON-lines file.
    pub fn raw(&self, value: Value) -> Result<()> {
        if let Some(path) = &self.json_out {
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            writeln!(file, "{value}")?;
        }
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut out =
            String::from("| Benchmark | Berth | Peer | Berth ÷ peer | Goal | Goal met? |\n|---|---|---|---|---|---|\n");
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                row.benchmark, row.berth, row.peer, row.ratio, row.goal, row.met
            );
        }
        out
    }
}

pub fn ratio(berth: f64, peer: f64) -> String {
    if peer == 0.0 { "n/a".to_owned() } else { format!("{:.2}×", berth / peer) }
}

pub fn verdict(met: bool) -> String {
    if met { "yes".to_owned() } else { "**no**".to_owned() }
}

pub fn mib(kib_or_bytes: f64, divisor: f64) -> String {
    format!("{:.1} MiB", kib_or_bytes / divisor)
}

//! Statistics and the printed / markdown report.

use std::fmt::Write as _;

/// The first three fields of /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Nearest-rank percentile of `v` (0 < p <= 1).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

pub fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// One measured quantity.
pub struct Row {
    name: String,
    samples: Vec<f64>,
    vs: Option<(String, f64)>,
    note: String,
}

impl Row {
    pub fn new(name: impl Into<String>, samples: Vec<f64>) -> Self {
        Row {
            name: name.into(),
            samples,
            vs: None,
            note: String::new(),
        }
    }

    /// Also report the median as a ratio to a baseline median.
    pub fn vs(mut self, baseline: &str, baseline_median: f64) -> Self {
        self.vs = Some((baseline.to_string(), baseline_median));
        self
    }

    pub fn note(mut self, note: String) -> Self {
        self.note = note;
        self
    }

    fn cells(&self) -> [String; 6] {
        let ratio = self
            .vs
            .as_ref()
            .map(|(b, m)| format!("{:.2}x {b}", median(&self.samples) / m))
            .unwrap_or_default();
        let note = match (ratio.is_empty(), self.note.is_empty()) {
            (false, false) => format!("{ratio}; {}", self.note),
            (false, true) => ratio,
            _ => self.note.clone(),
        };
        [
            self.name.clone(),
            self.samples.len().to_string(),
            format!("{:.1}", median(&self.samples)),
            format!("{:.1}", percentile(&self.samples, 0.95)),
            format!("{:.1}", percentile(&self.samples, 0.99)),
            note,
        ]
    }
}

pub struct Report {
    accel: String,
    load_at_start: String,
    quick: bool,
    rows: Vec<Row>,
    pss_mib: f64,
    pss_n: usize,
}

impl Report {
    pub fn new(accel: String, quick: bool) -> Self {
        Report {
            accel,
            load_at_start: loadavg(),
            quick,
            rows: Vec::new(),
            pss_mib: f64::NAN,
            pss_n: 0,
        }
    }

    pub fn push(&mut self, row: Row) {
        let c = row.cells();
        eprintln!("  {}: median {} ms, p99 {} ms {}", c[0], c[2], c[4], c[5]);
        self.rows.push(row);
    }

    pub fn memory(&mut self, pss_mib: f64, n: usize) {
        self.pss_mib = pss_mib;
        self.pss_n = n;
    }

    fn machine() -> String {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        format!("{cores} cores ({cpu})")
    }

    pub fn print(&self) {
        println!("{}", self.table());
    }

    fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "| what | n | median ms | p95 ms | p99 ms | notes |");
        let _ = writeln!(t, "|---|---:|---:|---:|---:|---|");
        for r in &self.rows {
            let c = r.cells();
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} |",
                c[0], c[1], c[2], c[3], c[4], c[5]
            );
        }
        if self.pss_n > 0 {
            let fit = (16.0 * 1024.0 / self.pss_mib).floor();
            let _ = writeln!(
                t,
                "| host memory per idle sandbox (PSS, template pages shared) | {} | {:.1} MiB | | | {fit} fit in 16 GiB |",
                self.pss_n, self.pss_mib
            );
        }
        t
    }

    pub fn markdown(&self) -> String {
        let load = format!(
            "- host load average (1/5/15 min) at start: {}, at end: {}; on this shared \
             2-core machine other work often runs beside the benchmark, and under TCG every \
             guest-side number moves with it\n",
            self.load_at_start,
            loadavg()
        );
        let mut m = String::new();
        let _ = writeln!(m, "# Benchmarks\n");
        let _ = writeln!(
            m,
            "Produced by `cargo run --release -p mags-bench` (after `cargo build --release --workspace` \
             and `scripts/build-agent`). Every number comes from one run on one machine; \
             baselines were measured in the same run.\n"
        );
        let _ = writeln!(m, "- machine: {}", Self::machine());
        let _ = writeln!(m, "- accelerator: **{}**", self.accel);
        m.push_str(&load);
        let _ = writeln!(
            m,
            "- guest: 256 MiB, 1 vCPU, 2 GiB disk; sample counts in the table{}\n",
            if self.quick { " (quick run)" } else { "" }
        );
        m.push_str(&self.table());
        m.push_str(
            "\nReading the table:\n\
             - *template restore* includes what a raw restore does not: a qcow2 overlay of \
             the (mounted) template's disk, the QMP calls, and a new identity (RNG reseed, \
             machine-id, clock, network).\n\
             - *take from the warm pool* is what a job waits for when an idle sandbox is ready; \
             the pool refills in the background.\n\
             - end-to-end rows include starting the `mags` process, the HTTP calls, storing the \
             output and the final status.\n\
             - *workspace* rows use the default object store (a local directory) and a 4 GiB \
             disk holding 1 GiB of random data; a sync freezes the guest's filesystem, hashes \
             the disk's changed 4 MiB chunks, uploads the ones storage lacks and then writes \
             the version's manifest. The empty-cache start restores every chunk first.\n",
        );
        m
    }
}

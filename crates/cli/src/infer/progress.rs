//! Progress of `ingot infer` on stderr: an indicatif bar (rows, rows/s, tokens/s, ETA) when
//! stderr is a terminal, else one plain line every few seconds, so logs stay readable.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain form prints a line.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    rows: usize,
    tokens: usize,
    start: Instant,
    last_line: Instant,
}

impl Progress {
    /// Progress over `total` rows.
    pub fn new(total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} rows  {msg}  ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        let now = Instant::now();
        Progress { bar, total, rows: 0, tokens: 0, start: now, last_line: now }
    }

    /// A row finished, having generated `tokens` tokens.
    pub fn row_done(&mut self, tokens: usize) {
        self.rows += 1;
        self.tokens += tokens;
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.rows as u64);
                bar.set_message(self.rates());
            }
            None if self.last_line.elapsed() >= PLAIN_EVERY => {
                self.last_line = Instant::now();
                eprintln!("infer: {}/{} rows, {}, ETA {}", self.rows, self.total, self.rates(), self.eta());
            }
            None => {}
        }
    }

    fn rates(&self) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        format!("{:.2} rows/s, {:.1} tokens/s", self.rows as f64 / secs, self.tokens as f64 / secs)
    }

    fn eta(&self) -> String {
        if self.rows == 0 {
            return "?".into();
        }
        let per_row = self.start.elapsed().as_secs_f64() / self.rows as f64;
        format!("{:.0}s", per_row * (self.total - self.rows) as f64)
    }

    /// Ends the bar and prints the run's totals.
    pub fn finish(self, written: usize, errors: usize) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!(
            "infer: {} rows in {:.1}s ({}): {written} predictions, {errors} errors",
            self.rows,
            self.start.elapsed().as_secs_f64(),
            self.rates()
        );
    }
}

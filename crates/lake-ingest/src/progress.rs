//! The progress line on a terminal.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ingest::IngestSummary;

pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} {spinner} {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }

    pub fn update(&self, summary: &IngestSummary, elapsed: Duration, since_commit: Duration) {
        let seconds = elapsed.as_secs_f64().max(1e-3);
        self.bar.set_message(format!(
            "{} records ({:.0}/s, {:.1} MB/s), last commit {}s ago",
            summary.consumed,
            summary.consumed as f64 / seconds,
            summary.bytes as f64 / 1e6 / seconds,
            since_commit.as_secs()
        ));
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

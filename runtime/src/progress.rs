//! Terminal progress for long CLI operations: an indicatif bar that stays hidden for the first
//! second, so quick commands print nothing but their result.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Operations shorter than this show no bar.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// A byte-counting progress bar drawn on stderr once the operation has run for a second.
pub struct DelayedBar {
    bar: ProgressBar,
    started: Instant,
    shown: bool,
}

impl DelayedBar {
    pub fn bytes(total: u64, message: impl Into<String>) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("the template is valid: this is a bug")
            .progress_chars("=> "),
        );
        bar.set_message(message.into());
        Self {
            bar,
            started: Instant::now(),
            shown: false,
        }
    }

    pub fn advance(&mut self, bytes: u64) {
        self.bar.inc(bytes);
        if !self.shown && self.started.elapsed() >= SHOW_AFTER {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

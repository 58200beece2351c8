//! Terminal progress for long CLI operations: indicatif bars that stay hidden for the first
//! second, so quick commands print nothing but their result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Operations shorter than this show no bar.
const SHOW_AFTER: Duration = Duration::from_secs(1);

const BYTES_TEMPLATE: &str = "{msg:>8} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
const COUNT_TEMPLATE: &str = "{msg:>8} [{bar:40}] {pos}/{len} {per_sec}";

/// Bars drawn together on stderr once the operation has run for a second. Clones share the
/// group; its bars may be advanced from any thread.
#[derive(Clone)]
pub struct DelayedBars {
    group: Arc<Group>,
}

struct Group {
    multi: MultiProgress,
    started: Instant,
    shown: AtomicBool,
}

impl Group {
    fn show_if_due(&self) {
        if !self.shown.load(Ordering::Relaxed) && self.started.elapsed() >= SHOW_AFTER && !self.shown.swap(true, Ordering::Relaxed) {
            self.multi.set_draw_target(ProgressDrawTarget::stderr());
        }
    }
}

/// One bar of a [`DelayedBars`] group.
#[derive(Clone)]
pub struct Bar {
    bar: ProgressBar,
    group: Arc<Group>,
}

impl Bar {
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.group.show_if_due();
    }
}

impl DelayedBars {
    pub fn new() -> Self {
        Self {
            group: Arc::new(Group {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
                started: Instant::now(),
                shown: AtomicBool::new(false),
            }),
        }
    }

    /// A bar counting bytes.
    pub fn bytes(&self, total: u64, message: impl Into<String>) -> Bar {
        self.add(total, message.into(), BYTES_TEMPLATE)
    }

    /// A bar counting items (atoms, layers).
    pub fn count(&self, total: u64, message: impl Into<String>) -> Bar {
        self.add(total, message.into(), COUNT_TEMPLATE)
    }

    fn add(&self, total: u64, message: String, template: &str) -> Bar {
        let bar = self.group.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("the template is valid: this is a bug")
                .progress_chars("=> "),
        );
        bar.set_message(message);
        Bar {
            bar,
            group: self.group.clone(),
        }
    }

    /// Removes the bars from the terminal.
    pub fn finish(&self) {
        let _ = self.group.multi.clear();
    }
}

impl Default for DelayedBars {
    fn default() -> Self {
        Self::new()
    }
}

/// A single byte-counting bar (a group of one).
pub struct DelayedBar {
    bars: DelayedBars,
    bar: Bar,
}

impl DelayedBar {
    pub fn bytes(total: u64, message: impl Into<String>) -> Self {
        let bars = DelayedBars::new();
        let bar = bars.bytes(total, message);
        Self { bars, bar }
    }

    pub fn advance(&mut self, bytes: u64) {
        self.bar.inc(bytes);
    }

    pub fn finish(self) {
        self.bars.finish();
    }
}

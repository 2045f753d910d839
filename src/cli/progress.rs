//! Owns: drawing the library's progress events. On a terminal (and not
//! `--json`) every task is an indicatif bar with the ONE template below;
//! otherwise tasks are silent. Warnings always go to stderr. Nothing else
//! in the crate uses indicatif or checks for a terminal.
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::progress::{Event, Progress};

/// The one bar template (message, bar, bytes, rate).
const TEMPLATE: &str = "{msg:40!} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}";

/// The renderer for a command: bars when stderr is a terminal and the
/// output is not JSON, else warnings only.
pub fn for_command(json: bool) -> Box<dyn Progress> {
    if !json && std::io::stderr().is_terminal() {
        Box::new(Bars::default())
    } else {
        Box::new(WarningsOnly)
    }
}

/// Silent tasks; warnings on stderr.
pub struct WarningsOnly;

impl Progress for WarningsOnly {
    fn event(&self, event: Event<'_>) {
        if let Event::Warning(message) = event {
            eprintln!("stagex: warning: {message}");
        }
    }
}

/// One bar per running task.
#[derive(Default)]
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn style() -> ProgressStyle {
        ProgressStyle::with_template(TEMPLATE).unwrap_or_else(|_| ProgressStyle::default_bar())
    }
}

impl Progress for Bars {
    fn event(&self, event: Event<'_>) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Started { id, what, total } => {
                let bar = self.multi.add(match total {
                    Some(n) => ProgressBar::new(n),
                    None => ProgressBar::no_length(),
                });
                bar.set_style(Bars::style());
                bar.set_message(what.to_string());
                bars.insert(id.to_string(), bar);
            }
            Event::Advanced { id, bytes } => {
                if let Some(bar) = bars.get(id) {
                    bar.inc(bytes);
                }
            }
            Event::Finished { id } => {
                if let Some(bar) = bars.remove(id) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
            }
            Event::Warning(message) => {
                let line = format!("stagex: warning: {message}");
                if self.multi.println(&line).is_err() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

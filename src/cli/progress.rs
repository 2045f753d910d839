//! Owns: drawing the library's progress events. On a terminal (and not
//! `--json`) every task is an indicatif bar drawn with the template of its
//! unit (`template`: bytes with a rate, items as `3/6`);
//! otherwise tasks are silent. Warnings always go to stderr. Also the
//! human form of a byte count (`human_bytes`). Nothing else in the crate
//! uses indicatif or checks stderr for a terminal.
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::progress::{Event, Progress, Unit};

/// The bar template of a task: bytes with a rate, items as `3/6` (images
/// as `3/6 images`); a task
/// with no known total shows only its message and time.
fn template(unit: Unit, total: Option<u64>) -> &'static str {
    match (unit, total) {
        (_, None) => "{msg:40!} {spinner} {elapsed}",
        (Unit::Bytes, Some(_)) => "{msg:40!} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
        (Unit::Items, Some(_)) => "{msg:40!} {bar:30} {pos}/{len} {elapsed}",
        (Unit::Images, Some(_)) => "{msg:40!} {bar:30} {pos}/{len} images {elapsed}",
    }
}

/// The renderer for a command: bars when stderr is a terminal and the
/// output is not JSON, else warnings only.
pub fn for_command(json: bool) -> Box<dyn Progress> {
    Box::new(Renderer::choose(json))
}

/// The renderer for a command that counts `items`: as `for_command`, but
/// no bar for a single item (a bar that jumps from 0/1 to 1/1 is noise).
pub fn for_items(json: bool, items: usize) -> Renderer {
    Renderer::choose(json || items <= 1)
}

/// Bars or warnings only; prints a command's result lines without tearing
/// its bars (`suspend`).
pub enum Renderer {
    Bars(Bars),
    WarningsOnly(WarningsOnly),
}

impl Renderer {
    fn choose(quiet: bool) -> Renderer {
        if !quiet && std::io::stderr().is_terminal() {
            Renderer::Bars(Bars::default())
        } else {
            Renderer::WarningsOnly(WarningsOnly)
        }
    }

    /// Runs `print` with the bars hidden, so what it prints stays whole.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        match self {
            Renderer::Bars(bars) => bars.multi.suspend(print),
            Renderer::WarningsOnly(_) => print(),
        }
    }
}

impl Progress for Renderer {
    fn event(&self, event: Event<'_>) {
        match self {
            Renderer::Bars(bars) => bars.event(event),
            Renderer::WarningsOnly(quiet) => quiet.event(event),
        }
    }
}

/// `n` bytes for humans (`2.00 KiB`).
pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
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
    fn style(unit: Unit, total: Option<u64>) -> ProgressStyle {
        ProgressStyle::with_template(template(unit, total))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
    }
}

impl Progress for Bars {
    fn event(&self, event: Event<'_>) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Started {
                id,
                what,
                total,
                unit,
            } => {
                let bar = self.multi.add(match total {
                    Some(n) => ProgressBar::new(n),
                    None => ProgressBar::no_length(),
                });
                bar.set_style(Bars::style(unit, total));
                bar.set_message(what.to_string());
                bars.insert(id.to_string(), bar);
            }
            Event::Advanced { id, amount } => {
                if let Some(bar) = bars.get(id) {
                    bar.inc(amount);
                }
            }
            Event::Described { id, what } => {
                if let Some(bar) = bars.get(id) {
                    bar.set_message(what.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_counted_and_bytes_are_sized() {
        let items = template(Unit::Items, Some(6));
        assert!(items.contains("{pos}/{len}"), "{items}");
        assert!(!items.contains("bytes"), "{items}");
        let bytes = template(Unit::Bytes, Some(6));
        assert!(bytes.contains("{bytes}/{total_bytes}"), "{bytes}");
        let images = template(Unit::Images, Some(6));
        assert!(images.contains("{pos}/{len} images"), "{images}");
        for unit in [Unit::Bytes, Unit::Items, Unit::Images] {
            let open = template(unit, None);
            assert!(!open.contains("total") && !open.contains("{len}"), "{open}");
            // Every template is one indicatif accepts.
            for total in [None, Some(1)] {
                assert!(ProgressStyle::with_template(template(unit, total)).is_ok());
            }
        }
    }
}

//! Stopping a run cleanly: which outputs are being written right now, and removing their
//! temporary files (see [`crate::writer::atomic`]) when the run is interrupted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::writer::atomic::remove_partials;

/// Shared between a run and whoever may interrupt it (the CLI's Ctrl-C handler).
#[derive(Debug, Default)]
pub struct Control {
    stopped: AtomicBool,
    in_flight: Mutex<BTreeSet<PathBuf>>,
}

/// An output registered as being written; unregistered when dropped.
pub struct InFlight<'a> {
    control: &'a Control,
    path: PathBuf,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.control.in_flight.lock() {
            set.remove(&self.path);
        }
    }
}

impl Control {
    /// A control that has not been interrupted.
    pub fn new() -> Self {
        Control::default()
    }

    /// True once [`Control::interrupt`] was called: no new file is started.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Registers `output` before its temporary file is created; `None` once interrupted.
    pub fn begin(&self, output: &Path) -> Option<InFlight<'_>> {
        let mut set = self.in_flight.lock().ok()?;
        if self.is_stopped() {
            return None;
        }
        set.insert(output.to_path_buf());
        Some(InFlight {
            control: self,
            path: output.to_path_buf(),
        })
    }

    /// Stops the run: no new output is started, and the temporary files of the outputs being
    /// written are removed (their writers fail or the process exits; no final name is ever
    /// touched). Returns how many temporary files were removed. Safe to call more than once.
    pub fn interrupt(&self) -> usize {
        self.stopped.store(true, Ordering::SeqCst);
        let set = match self.in_flight.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        set.iter().map(|p| remove_partials(p)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_removes_the_temporary_files_of_outputs_in_flight_and_stops_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model.safetensors");
        let c = Control::new();
        let guard = c.begin(&out).unwrap();
        let partial = dir.path().join(".model.safetensors.Ab12Cd.partial");
        let other = dir.path().join(".other.safetensors.Ab12Cd.partial");
        std::fs::write(&partial, b"half").unwrap();
        std::fs::write(&other, b"not ours").unwrap();
        assert_eq!(c.interrupt(), 1);
        assert!(!partial.exists() && other.exists());
        assert!(c.is_stopped() && c.begin(&dir.path().join("next.safetensors")).is_none());
        drop(guard);
    }
}

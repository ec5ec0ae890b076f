//! Stopping a run cleanly: which outputs are being written right now, removing their temporary
//! files (see [`crate::writer::atomic`]) when the run is interrupted, and the journal of what was
//! done, so an interrupted run still reports every finished file and every one it did not reach.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::report::{FileRecord, Report, SCHEMA, Status, Summary};
use crate::writer::atomic::remove_partials;

/// Shared between a run and whoever may interrupt it (the CLI's signal handler).
#[derive(Debug, Default)]
pub struct Control {
    stopped: AtomicBool,
    in_flight: Mutex<BTreeSet<PathBuf>>,
    journal: Mutex<Journal>,
    reported: AtomicBool,
}

/// What a run planned and what it finished so far.
#[derive(Debug, Default)]
struct Journal {
    started: Option<Instant>,
    dry_run: bool,
    partition: Option<String>,
    /// Per planned unit, in plan order: the file it is about, and its records once done.
    units: Vec<(PathBuf, Option<Vec<FileRecord>>)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Records the plan: the file of every unit, in order.
    pub(super) fn plan(
        &self,
        started: Instant,
        units: Vec<PathBuf>,
        dry_run: bool,
        partition: Option<String>,
    ) {
        let mut j = lock(&self.journal);
        j.started = Some(started);
        j.dry_run = dry_run;
        j.partition = partition;
        j.units = units.into_iter().map(|u| (u, None)).collect();
    }

    /// Records that unit `i` of the plan is done. Once the run is stopped, a unit that failed
    /// is left not done: its failure is most likely the interruption itself (its temporary file
    /// was removed), and the next run does it.
    pub(super) fn done(&self, i: usize, records: Vec<FileRecord>) {
        if self.is_stopped() && records.iter().any(|r| r.status == Status::Failed) {
            return;
        }
        if let Some(u) = lock(&self.journal).units.get_mut(i) {
            u.1 = Some(records);
        }
    }

    /// The report of what was done so far: every finished unit's records in plan order, and,
    /// when the run stopped early, the files of the units it never finished.
    pub fn report(&self) -> Report {
        let j = lock(&self.journal);
        let files: Vec<FileRecord> = j
            .units
            .iter()
            .filter_map(|(_, r)| r.as_ref())
            .flatten()
            .cloned()
            .collect();
        let not_done: Vec<PathBuf> = j
            .units
            .iter()
            .filter(|(_, r)| r.is_none())
            .map(|(p, _)| p.clone())
            .collect();
        let seconds = j.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        Report {
            schema: SCHEMA,
            dry_run: j.dry_run,
            partition: j.partition.clone(),
            interrupted: self.is_stopped(),
            summary: Summary::of(&files, seconds),
            files,
            not_done,
        }
    }

    /// True for the first caller only: whoever writes the report (the run's end, or a signal
    /// handler that exits at once) claims it, so it is written once.
    pub fn claim_report(&self) -> bool {
        !self.reported.swap(true, Ordering::SeqCst)
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
        let partial = dir.path().join(crate::writer::atomic::partial_name(
            &out,
            std::process::id(),
            "Ab12Cd",
        ));
        let other = dir.path().join(crate::writer::atomic::partial_name(
            &dir.path().join("other.safetensors"),
            std::process::id(),
            "Ab12Cd",
        ));
        std::fs::write(&partial, b"half").unwrap();
        std::fs::write(&other, b"not ours").unwrap();
        assert_eq!(c.interrupt(), 1);
        assert!(!partial.exists() && other.exists());
        assert!(c.is_stopped() && c.begin(&dir.path().join("next.safetensors")).is_none());
        drop(guard);
    }
}

//! One indexed archive served by the mount, with the per-volume state of read-ahead and
//! page-cache pushing.

use std::sync::Arc;

use crate::index::Index;
use crate::reader::ArchiveReader;

use super::Slot;
use crate::fs::{prefetch, push};

/// One indexed archive served by the mount.
pub struct Volume {
    slot: Slot,
    reader: Arc<ArchiveReader>,
    progress: prefetch::Progress,
    walk: push::Walk,
}

impl Volume {
    /// A volume in `slot` (1..=[`MAX_SLOT`]) reading through `reader`.
    pub fn new(slot: Slot, reader: ArchiveReader) -> Volume {
        Volume {
            slot,
            reader: Arc::new(reader),
            progress: prefetch::Progress::default(),
            walk: push::Walk::default(),
        }
    }

    /// The volume's slot.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The reader of the volume's archive.
    pub fn reader(&self) -> &ArchiveReader {
        &self.reader
    }

    /// The reader, shared (the read-ahead pool holds it weakly).
    pub fn shared_reader(&self) -> &Arc<ArchiveReader> {
        &self.reader
    }

    /// The volume's index.
    pub fn index(&self) -> &Index {
        self.reader.index()
    }

    /// How far reads have gone (for read-ahead).
    pub(crate) fn progress(&self) -> &prefetch::Progress {
        &self.progress
    }

    /// Where a tree walker is (for pushing files ahead of it).
    pub(crate) fn walk(&self) -> &push::Walk {
        &self.walk
    }
}

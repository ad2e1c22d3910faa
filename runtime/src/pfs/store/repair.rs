//! Repair: storing a good copy of a page, got from its mirror, over this node's bad copy.

use super::{check_page, NodeStore};
use crate::pfs::error::{Result, StoreError};
use crate::pfs::pages::PageFiles;
use crate::pfs::record::{sync_dir, FileMeta};
use crate::pfs::slot::{Header, Slot, FLAG_POISON, HEADER_LEN};

impl NodeStore {
    /// Stores `data`, a good copy of `page` of `meta` at the committed epoch `epoch` (read by
    /// the caller from the mirror), over this node's bad copy, and fsyncs it. Never overwrites a
    /// good copy of `epoch` (if one is here, the call checks that `data` matches it and does
    /// nothing else), nor a slot of an uncommitted flush.
    pub(crate) fn repair_page(
        &mut self,
        meta: &FileMeta,
        page: u64,
        epoch: u64,
        data: &[u8],
    ) -> Result<()> {
        check_page(meta, page, data.len())?;
        let committed = self.committed_epoch();
        let misuse = |why: String| {
            Err(StoreError::Protocol(format!(
                "cannot repair page {page} of {:?} with a copy of epoch {epoch}: {why}",
                meta.name
            )))
        };
        if epoch == 0 || epoch > committed {
            return misuse(format!(
                "only committed epochs (1 to {committed}) can be repaired"
            ));
        }
        let local = crate::pfs::pages::local_page(meta, &self.node, page)?;
        let files_dir = self.files_dir();
        let files = PageFiles::create(&files_dir, meta.id)?;
        let slots = files.slots_of(meta.id, page)?;
        let crc = crc32c::crc32c(data);
        if let Some(h) = slots
            .iter()
            .filter_map(Slot::valid)
            .find(|h| h.epoch > epoch && h.epoch <= committed)
        {
            return misuse(format!(
                "this node holds a newer committed copy, of epoch {}",
                h.epoch
            ));
        }
        let same = (0..2).find(|&s| slots[s].valid().is_some_and(|h| h.epoch == epoch));
        // Whether to write the repair copy, and the slot that holds (or will hold) the good copy.
        let (write, kept) = match same {
            Some(s) => {
                let mut have = vec![0u8; data.len()];
                files.read_data(meta, (page, local), s, &mut have)?;
                let have_crc = crc32c::crc32c(&have);
                if have_crc != slots[s].valid().map_or(0, |h| h.data_crc) {
                    (true, s) // the bad copy: overwrite it in place
                } else if have_crc != crc {
                    return Err(StoreError::Corrupt {
                        file: meta.name.clone(),
                        page,
                        what: format!(
                            "this node's good copy of epoch {epoch} differs from the repair copy"
                        ),
                    });
                } else {
                    (false, s) // already good
                }
            }
            // A damaged slot first, then an empty one, then an older copy; never a slot of an
            // uncommitted flush.
            None => {
                let rank = |s: &Slot| match s {
                    Slot::Damaged(_) => Some(0),
                    Slot::Empty => Some(1),
                    Slot::Valid(h) if h.epoch < epoch => Some(2),
                    Slot::Valid(_) => None,
                };
                match (0..2).filter_map(|s| rank(&slots[s]).map(|r| (r, s))).min() {
                    Some((_, s)) => (true, s),
                    None => return misuse("both slots hold uncommitted copies".into()),
                }
            }
        };
        if write {
            files.write_data(meta, (page, local), kept, &[data])?;
            let header = Header {
                data_crc: crc,
                epoch,
                flags: 0,
                file: meta.id,
                page,
            };
            files.write_header(page, kept, &header.encode())?;
            files.sync()?;
            sync_dir(&files_dir)?;
        }
        // The good copy is durable: the other slot's damage no longer hides a possibly newer
        // copy. Clear it, unless a flush is open (the damaged slot could be one of its writes).
        let idle = self.flush.is_none() && self.prepared.is_none() && !self.inflight;
        match &slots[1 - kept] {
            Slot::Damaged(_) if idle => files.write_header(page, 1 - kept, &[0; HEADER_LEN])?,
            Slot::Valid(h) if h.flags & FLAG_POISON != 0 => {
                let clean = Header { flags: 0, ..*h };
                files.write_header(page, 1 - kept, &clean.encode())?;
            }
            _ => return Ok(()),
        }
        files.sync_slots()
    }
}

//! The two shadow slots of a page and their 32-byte headers, and the rule that picks a page's
//! current copy from them.
//!
//! Header of slot `s` of page `p`, at offset `(2p + s) * 32` of `files/<id>/slots`, all
//! little-endian:
//!
//! | bytes  | field |
//! | ------ | ----- |
//! | 0..4   | check: crc32c of bytes 4..32, xor [`HEADER_MAGIC`] |
//! | 4..8   | crc32c of the slot's page data |
//! | 8..15  | epoch (56 bits) |
//! | 15     | flags ([`FLAG_POISON`]) |
//! | 16..24 | file id |
//! | 24..32 | page number |
//!
//! All-zero bytes (a hole, or a discarded slot) are an *empty* slot. Any other header whose
//! check fails, or that names another file or page, is *damaged*: a flipped bit or a torn write
//! is caught by the check, and a misdirected write by the id and page.

use std::fmt;

/// Bytes per slot header.
pub(crate) const HEADER_LEN: usize = 32;

/// Mixed into the check, so that a header is not valid in any other crc32c-framed format.
pub(crate) const HEADER_MAGIC: u32 = 0x534C_5350; // "PSLS"

/// Largest epoch a header can carry.
pub(crate) const MAX_EPOCH: u64 = (1 << 56) - 1;

/// Flag: this slot's write replaced a damaged header. If the write is discarded (its epoch
/// never commits), the slot must read as damaged again, not as empty: the damaged header may
/// have been the page's newest copy, and the older sibling must not pass for current.
pub(crate) const FLAG_POISON: u8 = 1;

/// A decoded, checked header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// crc32c of the slot's page data.
    pub data_crc: u32,
    /// Epoch of the flush (or repair) that wrote the slot, 1..=[`MAX_EPOCH`].
    pub epoch: u64,
    /// [`FLAG_POISON`] or 0.
    pub flags: u8,
    /// The PFS file's id.
    pub file: u64,
    /// The page number.
    pub page: u64,
}

impl Header {
    /// The header's bytes.
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[4..8].copy_from_slice(&self.data_crc.to_le_bytes());
        b[8..16].copy_from_slice(
            &((self.epoch & MAX_EPOCH) | (u64::from(self.flags) << 56)).to_le_bytes(),
        );
        b[16..24].copy_from_slice(&self.file.to_le_bytes());
        b[24..32].copy_from_slice(&self.page.to_le_bytes());
        let check = crc32c::crc32c(&b[4..]) ^ HEADER_MAGIC;
        b[0..4].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// The bytes that discard this header: zeros (an empty slot), or, for a poisoned slot, the
    /// header with its check inverted, which reads as damaged.
    pub(crate) fn discarded(&self) -> [u8; HEADER_LEN] {
        if self.flags & FLAG_POISON == 0 {
            return [0; HEADER_LEN];
        }
        let mut b = self.encode();
        for x in &mut b[0..4] {
            *x = !*x;
        }
        b
    }
}

/// What a slot header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Never written, or discarded.
    Empty,
    /// Unreadable: its epoch is unknown, so it may be the page's newest copy.
    Damaged(String),
    /// A checked header for this file and page.
    Valid(Header),
}

impl Slot {
    /// Classifies the header bytes of a slot that should belong to file `file`, page `page`.
    pub(crate) fn classify(b: &[u8; HEADER_LEN], file: u64, page: u64) -> Slot {
        if b.iter().all(|&x| x == 0) {
            return Slot::Empty;
        }
        let word = |i: usize| {
            u64::from_le_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        let check = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if check != crc32c::crc32c(&b[4..]) ^ HEADER_MAGIC {
            return Slot::Damaged("its header fails its check".into());
        }
        let h = Header {
            data_crc: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            epoch: word(8) & MAX_EPOCH,
            flags: (word(8) >> 56) as u8,
            file: word(16),
            page: word(24),
        };
        if h.file != file || h.page != page {
            Slot::Damaged(format!(
                "its header names file id {} page {}",
                h.file, h.page
            ))
        } else if h.epoch == 0 || h.flags & !FLAG_POISON != 0 {
            Slot::Damaged(format!(
                "its header has epoch 0 or unknown flags {:#04x}",
                h.flags
            ))
        } else {
            Slot::Valid(h)
        }
    }

    /// The header, if the slot is valid.
    pub(crate) fn valid(&self) -> Option<&Header> {
        match self {
            Slot::Valid(h) => Some(h),
            _ => None,
        }
    }
}

/// What a page's two slots say about its copy at an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// No slot holds a copy at or before the epoch.
    Absent,
    /// Slot `slot` holds the newest copy; its data is still to be checked against `header`.
    Newest {
        /// Slot index, 0 or 1.
        slot: usize,
        /// Its header.
        header: Header,
    },
    /// No trustworthy copy: why.
    Corrupt(String),
}

/// The valid slot with the highest epoch at or before `upto`.
pub(crate) fn newest(slots: &[Slot; 2], upto: u64) -> Option<(usize, Header)> {
    (0..2)
        .filter_map(|s| slots[s].valid().map(|h| (s, *h)))
        .filter(|(_, h)| h.epoch <= upto)
        .max_by_key(|(_, h)| h.epoch)
}

/// Picks the page's copy at epoch `upto`. A damaged header makes the page corrupt unless the
/// other slot holds a copy of exactly `upto` (then nothing at or before `upto` can be newer,
/// since the two slots of a page never share an epoch): an older copy is never used in place
/// of one that may be newer.
pub(crate) fn resolve(slots: &[Slot; 2], upto: u64) -> Resolved {
    let best = newest(slots, upto);
    let damaged = (0..2).find_map(|s| match &slots[s] {
        Slot::Damaged(why) => Some((s, why)),
        _ => None,
    });
    match (best, damaged) {
        (Some((slot, header)), Some(_)) if header.epoch == upto => {
            Resolved::Newest { slot, header }
        }
        (_, Some((s, why))) => {
            Resolved::Corrupt(format!("slot {s}: {why}, and it may hold the newest copy"))
        }
        (Some((slot, header)), None) => Resolved::Newest { slot, header },
        (None, None) => Resolved::Absent,
    }
}

/// The state of one page's copy on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PageState {
    /// A checked copy, written at `epoch`.
    Present {
        /// The epoch that wrote it.
        epoch: u64,
    },
    /// No copy here: never written, or the disk root was wiped. The caller decides between
    /// zeros and the mirror.
    Absent,
    /// The newest copy is bad; older copies are not used, since they are stale.
    Corrupt {
        /// What is wrong.
        why: String,
    },
}

impl fmt::Display for PageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageState::Present { epoch } => write!(f, "present (epoch {epoch})"),
            PageState::Absent => f.write_str("absent"),
            PageState::Corrupt { why } => write!(f, "corrupt: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(epoch: u64) -> Header {
        Header {
            data_crc: 0xdead_beef,
            epoch,
            flags: 0,
            file: 7,
            page: 9,
        }
    }

    #[test]
    fn headers_round_trip_and_every_bit_flip_is_caught() {
        let header = Header {
            flags: FLAG_POISON,
            ..h(MAX_EPOCH)
        };
        let bytes = header.encode();
        assert_eq!(Slot::classify(&bytes, 7, 9), Slot::Valid(header));
        for bit in 0..HEADER_LEN * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(Slot::classify(&b, 7, 9), Slot::Damaged(_)),
                "bit {bit}"
            );
        }
        // A torn write: part of a new header over the old one of the same slot.
        let new = Header {
            data_crc: 1,
            ..h(6)
        }
        .encode();
        let old = h(3).encode();
        for cut in [1, 4, 6, 8] {
            let mut torn = old;
            torn[..cut].copy_from_slice(&new[..cut]);
            assert!(
                matches!(Slot::classify(&torn, 7, 9), Slot::Damaged(_)),
                "{cut}"
            );
            let mut torn = new;
            torn[..cut].copy_from_slice(&old[..cut]);
            assert!(
                matches!(Slot::classify(&torn, 7, 9), Slot::Damaged(_)),
                "{cut}"
            );
        }
        assert!(matches!(Slot::classify(&bytes, 7, 8), Slot::Damaged(w) if w.contains("page 9")));
        assert_eq!(Slot::classify(&[0; HEADER_LEN], 7, 9), Slot::Empty);
    }

    #[test]
    fn discarding_keeps_poison() {
        assert_eq!(h(4).discarded(), [0; HEADER_LEN]);
        let poisoned = Header {
            flags: FLAG_POISON,
            ..h(4)
        };
        assert!(matches!(
            Slot::classify(&poisoned.discarded(), 7, 9),
            Slot::Damaged(_)
        ));
    }

    #[test]
    fn the_newest_copy_wins_and_damage_is_never_skipped() {
        let v = |e| Slot::Valid(h(e));
        let bad = || Slot::Damaged("x".into());
        assert_eq!(resolve(&[Slot::Empty, Slot::Empty], 5), Resolved::Absent);
        assert_eq!(
            resolve(&[v(3), v(4)], 5),
            Resolved::Newest {
                slot: 1,
                header: h(4)
            }
        );
        assert_eq!(
            resolve(&[v(3), v(6)], 5),
            Resolved::Newest {
                slot: 0,
                header: h(3)
            }
        );
        assert_eq!(resolve(&[v(6), Slot::Empty], 5), Resolved::Absent);
        assert!(matches!(resolve(&[v(3), bad()], 5), Resolved::Corrupt(_)));
        assert!(matches!(
            resolve(&[bad(), Slot::Empty], 5),
            Resolved::Corrupt(_)
        ));
        // A copy of exactly the epoch read cannot be beaten by the damaged slot.
        assert_eq!(
            resolve(&[bad(), v(5)], 5),
            Resolved::Newest {
                slot: 1,
                header: h(5)
            }
        );
    }
}

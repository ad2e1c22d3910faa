//! Commit records and the file catalog they carry, and the atomic file replacement that
//! publishes them.
//!
//! A record file holds `postcard({magic, format_version, epoch, catalog})` followed by the
//! crc32c of those bytes (4 bytes, little-endian). A record that fails its magic, its checksum,
//! its version or its decoding is an error naming the file: it is never taken as empty.

use super::error::{io_error, Result, StoreError};
use super::layout::Layout;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// First bytes of every record file.
pub(crate) const RECORD_MAGIC: [u8; 8] = *b"PSLSREC\0";

/// The record format this build writes and reads. Version 4: each node's data files are laid
/// out by the pages' local indices (`pages.rs`), so a store of version 3 must not be read.
pub(crate) const FORMAT_VERSION: u32 = 4;

/// Longest PFS file name, in bytes.
pub(crate) const MAX_NAME: usize = 255;

/// Metadata of one PFS file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileMeta {
    /// Unique, never reused; names the file's directory `files/<id>` on every node.
    pub id: u64,
    /// The file's name (see [`validate_name`]).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Page size in bytes; every page is stored as exactly this many bytes.
    pub page_size: u32,
    /// Placement of its pages.
    pub layout: Layout,
    /// The node view at creation, in ring order.
    pub nodes: Vec<String>,
    /// Epoch of the last change of this file.
    pub version: u64,
    /// The pages ever written, as sorted, disjoint, non-adjacent ranges `[start, end)`. A page
    /// outside them was never written: it reads as zeros without a disk access. A page inside
    /// them that is missing on both of its nodes is lost data, never silently zeros.
    pub written: Vec<(u64, u64)>,
}

impl FileMeta {
    /// Whether page `page` was ever written.
    pub(crate) fn was_written(&self, page: u64) -> bool {
        let i = self.written.partition_point(|&(_, end)| end <= page);
        self.written.get(i).is_some_and(|&(start, _)| start <= page)
    }

    /// Records that the pages of `pages` (any order, duplicates allowed) were written.
    pub(crate) fn mark_written(&mut self, pages: impl IntoIterator<Item = u64>) {
        let mut all: Vec<(u64, u64)> = self.written.clone();
        all.extend(pages.into_iter().map(|p| (p, p + 1)));
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (s, e) in all {
            match merged.last_mut() {
                Some((_, le)) if s <= *le => *le = (*le).max(e),
                _ => merged.push((s, e)),
            }
        }
        self.written = merged;
    }

    /// How many pages were ever written.
    pub(crate) fn written_pages(&self) -> u64 {
        self.written.iter().map(|(s, e)| e - s).sum()
    }
}

/// All PFS files, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Catalog {
    /// The id the next created file gets.
    pub next_id: u64,
    /// The files, keyed by their name.
    pub files: BTreeMap<String, FileMeta>,
    /// The permanent checkpoints, by checkpoint set: published in the same epoch as the files
    /// and the hidden files of the set's volatile arrays, so that they are one atomic state.
    pub checkpoints: BTreeMap<String, PermanentCheckpoint>,
}

/// A job's permanent checkpoint, as the catalog keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PermanentCheckpoint {
    /// The checkpoint's epoch (in the job's checkpoint numbering).
    pub epoch: u64,
    /// Each rank's private state, encoded.
    pub private: Vec<Vec<u8>>,
    /// The volatile arrays saved: (allocation serial, hidden file name).
    pub arrays: Vec<(u64, String)>,
}

/// A node's commit (or prepare) record: the catalog as of an epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record {
    /// The permanent checkpoint's epoch; at least 1 in a stored record.
    pub epoch: u64,
    /// The files as of that epoch.
    pub catalog: Catalog,
}

/// The record as it is encoded.
#[derive(Serialize, Deserialize)]
struct Wire {
    magic: [u8; 8],
    format_version: u32,
    epoch: u64,
    catalog: Catalog,
}

/// The fixed front of [`Wire`], decoded first so that a newer format is named as such.
#[derive(Deserialize)]
struct WireHead {
    magic: [u8; 8],
    format_version: u32,
}

/// Checks a PFS file name: 1 to [`MAX_NAME`] bytes, no `/` or NUL, not `.` or `..`.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "it is empty".to_string()
    } else if name.len() > MAX_NAME {
        format!("it is {} bytes long", name.len())
    } else if name.contains('/') {
        "it contains '/'".to_string()
    } else if name.contains('\0') {
        "it contains a NUL byte".to_string()
    } else if name == "." || name == ".." {
        "it is a directory name".to_string()
    } else {
        return Ok(());
    };
    Err(StoreError::BadName {
        name: name.to_string(),
        why,
    })
}

impl Catalog {
    /// Adds a new, empty file named `name`, created at `epoch` on the node view `nodes`, and
    /// returns its metadata.
    pub(crate) fn create(
        &mut self,
        name: &str,
        page_size: u32,
        stripe_pages: u32,
        nodes: Vec<String>,
        epoch: u64,
    ) -> Result<&FileMeta> {
        validate_name(name)?;
        if self.files.contains_key(name) {
            return Err(StoreError::BadName {
                name: name.to_string(),
                why: "a PFS file with this name already exists".into(),
            });
        }
        if page_size == 0 || stripe_pages == 0 || nodes.is_empty() {
            return Err(StoreError::Protocol(format!(
                "cannot create {name:?} with page size {page_size}, {stripe_pages} pages per \
                 stripe and {} nodes: each must be at least 1",
                nodes.len()
            )));
        }
        let meta = FileMeta {
            id: self.next_id,
            name: name.to_string(),
            size: 0,
            page_size,
            layout: Layout::for_file(name, stripe_pages),
            nodes,
            version: epoch,
            written: Vec::new(),
        };
        self.next_id += 1;
        Ok(self.files.entry(name.to_string()).or_insert(meta))
    }

    /// The ids of all files.
    pub(crate) fn ids(&self) -> BTreeSet<u64> {
        self.files.values().map(|m| m.id).collect()
    }

    /// Checks the catalog's internal consistency; the error says what is wrong.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        let mut ids = BTreeSet::new();
        for (key, meta) in &self.files {
            validate_name(key).map_err(|e| e.to_string())?;
            if *key != meta.name {
                return Err(format!("entry {key:?} holds file {:?}", meta.name));
            }
            if meta.id >= self.next_id {
                return Err(format!(
                    "file {key:?} has id {}, not below next_id {}",
                    meta.id, self.next_id
                ));
            }
            if !ids.insert(meta.id) {
                return Err(format!("file {key:?} shares id {} with another", meta.id));
            }
            if meta.page_size == 0 || meta.layout.stripe_pages == 0 || meta.nodes.is_empty() {
                return Err(format!(
                    "file {key:?} has a zero page size, stripe or node view"
                ));
            }
            let pages = meta.size.div_ceil(u64::from(meta.page_size));
            let mut prev_end = None;
            for &(start, end) in &meta.written {
                if start >= end || end > pages || prev_end.is_some_and(|p| start <= p) {
                    return Err(format!(
                        "file {key:?} has a bad written range {start}..{end} (the file has {pages} pages)"
                    ));
                }
                prev_end = Some(end);
            }
        }
        Ok(())
    }
}

impl Record {
    /// Checks the record: an epoch of at least 1, a consistent catalog, no file changed after
    /// the record's epoch.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if self.epoch == 0 {
            return Err("its epoch is 0".into());
        }
        self.catalog.validate()?;
        match self.catalog.files.values().find(|m| m.version > self.epoch) {
            Some(m) => Err(format!(
                "file {:?} has version {}, after the record's epoch {}",
                m.name, m.version, self.epoch
            )),
            None => Ok(()),
        }
    }

    /// The record's bytes on disk.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let wire = Wire {
            magic: RECORD_MAGIC,
            format_version: FORMAT_VERSION,
            epoch: self.epoch,
            catalog: self.catalog.clone(),
        };
        let mut bytes = postcard::to_allocvec(&wire).map_err(|e| {
            StoreError::Protocol(format!(
                "cannot encode the record of epoch {}: {e}",
                self.epoch
            ))
        })?;
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        Ok(bytes)
    }

    /// Decodes and validates the bytes of the record file `path`.
    pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Record> {
        let bad = |why: String| StoreError::BadRecord {
            path: path.to_path_buf(),
            why,
        };
        if bytes.len() < RECORD_MAGIC.len() + 4 || bytes[..RECORD_MAGIC.len()] != RECORD_MAGIC {
            return Err(bad(format!(
                "it is not a PSLS record (bad magic, {} bytes)",
                bytes.len()
            )));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(bad(format!(
                "its checksum does not match (stored {stored:#010x}, computed {computed:#010x}): \
                 it is damaged or was torn"
            )));
        }
        let (head, _) = postcard::take_from_bytes::<WireHead>(body)
            .map_err(|e| bad(format!("its header does not decode: {e}")))?;
        if head.magic != RECORD_MAGIC {
            return Err(bad(
                "it is not a PSLS record (bad magic in its header)".into()
            ));
        }
        if head.format_version != FORMAT_VERSION {
            return Err(StoreError::Format {
                path: path.to_path_buf(),
                found: head.format_version,
                expected: FORMAT_VERSION,
            });
        }
        let (wire, rest) = postcard::take_from_bytes::<Wire>(body)
            .map_err(|e| bad(format!("it does not decode: {e}")))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} bytes follow its content", rest.len())));
        }
        let record = Record {
            epoch: wire.epoch,
            catalog: wire.catalog,
        };
        record.validate().map_err(bad)?;
        Ok(record)
    }
}

/// Reads the record file `path`: `None` when it does not exist.
pub(crate) fn read_record(path: &Path) -> Result<Option<Record>> {
    match fs::read(path) {
        Ok(bytes) => Record::decode(path, &bytes).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path, e)),
    }
}

/// `path` with `.tmp` appended to its file name.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Fsyncs the directory `dir`, which makes the creations, renames and removals in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync the directory", dir, e))
}

/// The directory that holds `path` (`.` for a bare file name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes` atomically: after a crash at any point, `path` holds either
/// its old content or all of `bytes`. Writes `path.tmp`, fsyncs it, renames it over `path` and
/// fsyncs the directory.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_error("create", &tmp, e))
        .and_then(|mut f| {
            f.write_all(bytes).map_err(|e| io_error("write", &tmp, e))?;
            f.sync_all().map_err(|e| io_error("fsync", &tmp, e))
        });
    if let Err(e) = written {
        // Give the space back; the old `path` is untouched.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path)
        .map_err(|e| io_error(format!("rename {} to", tmp.display()), path, e))?;
    sync_dir(parent_of(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("psls-record-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample() -> Record {
        let mut catalog = Catalog::default();
        catalog
            .create("a.dat", 4096, 2, vec!["n0".into(), "n1".into()], 1)
            .unwrap();
        let b = catalog
            .create("b Ω", 65536, 1, vec!["n1".into()], 2)
            .unwrap()
            .clone();
        let b = catalog.files.get_mut(&b.name).unwrap();
        b.size = 123_456;
        b.mark_written([0, 1]);
        Record { epoch: 3, catalog }
    }

    #[test]
    fn written_ranges_merge_and_answer_membership() {
        let mut catalog = Catalog::default();
        let mut m = catalog
            .create("w", 4096, 1, vec!["n0".into()], 1)
            .unwrap()
            .clone();
        m.size = 100 * 4096;
        assert!(!m.was_written(0));
        m.mark_written([5, 3, 4, 9, 4]);
        assert_eq!(m.written, vec![(3, 6), (9, 10)]);
        m.mark_written([6, 8]);
        assert_eq!(m.written, vec![(3, 7), (8, 10)]);
        m.mark_written([7]);
        assert_eq!(m.written, vec![(3, 10)]);
        m.mark_written([0, 99]);
        assert_eq!(m.written, vec![(0, 1), (3, 10), (99, 100)]);
        let yes: Vec<u64> = (0..101).filter(|&p| m.was_written(p)).collect();
        assert_eq!(yes, vec![0, 3, 4, 5, 6, 7, 8, 9, 99]);
        assert_eq!(m.written_pages(), 9);
        catalog.files.insert("w".into(), m.clone());
        assert_eq!(catalog.validate(), Ok(()));
        // Overlapping, unsorted, empty or past-the-end ranges are rejected.
        for bad in [
            vec![(3, 5), (4, 6)],
            vec![(3, 5), (5, 6)],
            vec![(6, 7), (1, 2)],
            vec![(2, 2)],
            vec![(99, 101)],
        ] {
            let mut c = catalog.clone();
            c.files.get_mut("w").unwrap().written = bad.clone();
            assert!(c.validate().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn catalog_round_trips_through_a_record_file() {
        let d = scratch("roundtrip");
        let path = d.join("commit");
        assert_eq!(read_record(&path).unwrap(), None);
        let r = sample();
        atomic_write(&path, &r.encode().unwrap()).unwrap();
        let back = read_record(&path).unwrap().unwrap();
        assert_eq!(back, r);
        assert_eq!(back.catalog.next_id, 2);
        assert_eq!(back.catalog.files["b Ω"].size, 123_456);
        assert_eq!(
            back.catalog.files["a.dat"].layout,
            Layout::for_file("a.dat", 2)
        );
        assert!(!tmp_path(&path).exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damaged_records_are_errors_naming_the_path() {
        let d = scratch("damaged");
        let path = d.join("commit");
        let good = sample().encode().unwrap();
        let mut cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "bad magic"),
            (b"hello world, not a record".to_vec(), "bad magic"),
            (good[..good.len() - 1].to_vec(), "checksum"),
        ];
        for i in [RECORD_MAGIC.len(), good.len() / 2, good.len() - 1] {
            let mut flipped = good.clone();
            flipped[i] ^= 0x10;
            cases.push((flipped, "checksum"));
        }
        // A valid frame around a future version.
        let mut future = postcard::to_allocvec(&Wire {
            magic: RECORD_MAGIC,
            format_version: FORMAT_VERSION + 1,
            epoch: 1,
            catalog: Catalog::default(),
        })
        .unwrap();
        let crc = crc32c::crc32c(&future);
        future.extend_from_slice(&crc.to_le_bytes());
        let newer = format!("format version {}", FORMAT_VERSION + 1);
        cases.push((future, newer.as_str()));
        for (bytes, why) in cases {
            fs::write(&path, &bytes).unwrap();
            let e = read_record(&path).unwrap_err();
            let text = e.to_string();
            if why.starts_with("format version") {
                // Another version is its own error, which says what to do with the volume.
                assert!(matches!(e, StoreError::Format { .. }), "{text}");
                assert!(text.contains("psls-pfs export"), "{text}");
            } else {
                assert!(matches!(e, StoreError::BadRecord { .. }), "{text}");
            }
            assert!(
                text.contains(&path.display().to_string()) && text.contains(why),
                "{why}: {text}"
            );
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn names_are_validated() {
        for good in [
            "a",
            "results.h5",
            "ünïcödé name",
            ".hidden",
            "..x",
            &"n".repeat(255),
        ] {
            validate_name(good).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            (&"n".repeat(256) as &str, "256 bytes"),
            ("dir/file", "'/'"),
            ("nul\0", "NUL"),
            (".", "directory name"),
            ("..", "directory name"),
        ] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains("1 to 255 bytes"),
                "{bad:?}: {e}"
            );
        }
        let mut c = Catalog::default();
        c.create("x", 4096, 1, vec!["n".into()], 1).unwrap();
        let e = c.create("x", 4096, 1, vec!["n".into()], 1).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert!(c.create("a/b", 4096, 1, vec!["n".into()], 1).is_err());
        assert!(c.create("y", 0, 1, vec!["n".into()], 1).is_err());
        assert_eq!(c.next_id, 1);
    }

    #[test]
    fn inconsistent_catalogs_are_refused() {
        let good = sample();
        good.validate().unwrap();
        let mut r = good.clone();
        r.catalog.next_id = 1;
        assert!(r.validate().unwrap_err().contains("next_id"));
        let mut r = good.clone();
        r.catalog.files.get_mut("a.dat").unwrap().name = "other".into();
        assert!(r.validate().unwrap_err().contains("holds file"));
        let mut r = good.clone();
        r.catalog.files.get_mut("a.dat").unwrap().id = 1;
        assert!(r.validate().unwrap_err().contains("shares id"));
        let mut r = good.clone();
        r.epoch = 1;
        assert!(r
            .validate()
            .unwrap_err()
            .contains("after the record's epoch"));
        let r = Record::default();
        assert!(r.validate().unwrap_err().contains("epoch is 0"));
    }
}

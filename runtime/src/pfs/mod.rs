//! The PFS: PSLS's own parallel file system, striped page by page across the nodes' disk roots,
//! each page with a primary copy on one node and a mirror copy on its buddy.
//!
//! This module holds the node-local half: [`layout`] says which nodes keep a page, and
//! [`NodeStore`] keeps what one node holds in its disk root (the page slots, the file catalog
//! and the commit records of the two-phase commit), crash-safely and with a crc32c on every page
//! and record. It calls no MPI: votes across nodes and reads from the mirror are the runtime's.

mod error;
pub(crate) mod layout;
mod pages;
mod record;
mod slot;
mod store;
mod volume;

pub(crate) use error::StoreError;
pub(crate) use record::{Catalog, FileMeta, PermanentCheckpoint};
// The rest of the store's API, not used outside the module yet.
pub(crate) use slot::PageState;
pub(crate) use store::NodeStore;
pub(crate) use volume::Volume;
#[allow(unused_imports)]
pub(crate) use {
    error::Result,
    layout::{rotation_for, Layout, Placement},
    record::{atomic_write, Record},
};

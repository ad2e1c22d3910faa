//! Placement: which node keeps the primary copy and which keeps the mirror copy of each page.
//!
//! Pages are grouped into stripes of `stripe_pages` pages; stripes go round the ring of nodes,
//! starting at a node chosen by the file's name, and each page's mirror is on the primary's
//! buddy (the next node of the ring). Placement is a pure function of the page number and the
//! node view (the number and order of the live nodes), so that after a node loss the same
//! function over the new view says where every page must be re-mirrored.

use serde::{Deserialize, Serialize};

/// How a file's pages are spread over the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Layout {
    /// Pages per stripe: consecutive pages that share one primary node. At least 1.
    pub stripe_pages: u32,
    /// Ring offset of stripe 0, from [`rotation_for`] of the file name, so that small files do
    /// not all start on node 0.
    pub rotation: u32,
}

/// Where one page lives, as indices into the node view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The node that keeps the primary copy.
    pub primary: usize,
    /// The node that keeps the mirror copy (the primary's buddy); `None` on a one-node view.
    pub mirror: Option<usize>,
}

impl Layout {
    /// The layout of a file named `name` with stripes of `stripe_pages` pages.
    pub(crate) fn for_file(name: &str, stripe_pages: u32) -> Layout {
        Layout {
            stripe_pages,
            rotation: rotation_for(name),
        }
    }

    /// Places `page` on a view of `nodes` live nodes.
    ///
    /// Callers never pass `nodes == 0` or a zero `stripe_pages` (catalogs with one are refused);
    /// both are taken as 1 so that a bad value cannot cause a division by zero.
    pub(crate) fn place(&self, page: u64, nodes: usize) -> Placement {
        let n = nodes.max(1) as u64;
        let stripe = page / u64::from(self.stripe_pages.max(1));
        // Reduce both terms first, so that no page number can overflow the sum.
        let primary = ((stripe % n + u64::from(self.rotation) % n) % n) as usize;
        let mirror = (n > 1).then(|| (primary + 1) % n as usize);
        Placement { primary, mirror }
    }

    /// The index of `page` among the pages that node `node` (an index into a view of `nodes`
    /// nodes) keeps, primary and mirror copies alike, counted in page order: `None` when the
    /// node keeps no copy of the page, or the index would not fit in 64 bits.
    ///
    /// A node's data file is laid out by this index, so that the pages it keeps are dense on
    /// its disk whatever the stripe unit: with one-page stripes on four nodes a node keeps two
    /// pages in every four, and a flush writes them as one run instead of runs of two.
    ///
    /// In ring order, stripe `s` sits at position `j = s + rotation mod n`: round `j / n`,
    /// place `j % n`. Each round gives node `b` two stripes, at places `b - 1` (it mirrors) and
    /// `b` (its own primary), or `0` and `n - 1` for node 0; the one at the lower place comes
    /// first. With two nodes every node keeps every stripe, and with one node every page.
    pub(crate) fn local_index(&self, page: u64, nodes: usize, node: usize) -> Option<u64> {
        let n = nodes.max(1) as u128;
        let sp = u128::from(self.stripe_pages.max(1));
        let node = node as u128;
        if node >= n {
            return None;
        }
        let (stripe, within) = (u128::from(page) / sp, u128::from(page) % sp);
        let j = stripe + u128::from(self.rotation) % n;
        let local_stripe = if n <= 2 {
            j
        } else {
            let (round, place) = (j / n, j % n);
            let other = (node + n - 1) % n;
            if place != node && place != other {
                return None;
            }
            round * 2 + u128::from(place != node.min(other))
        };
        u64::try_from(local_stripe * sp + within).ok()
    }
}

/// The ring offset of the file `name`: FNV-1a 64 of the name's bytes, mod 2^32. It is stable
/// across runs, hosts and builds.
pub(crate) fn rotation_for(name: &str) -> u32 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = name
        .bytes()
        .fold(OFFSET_BASIS, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    hash as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_is_fnv1a_64_truncated() {
        // Published FNV-1a 64 test vectors: "" and "a".
        assert_eq!(rotation_for(""), 0x8422_2325);
        assert_eq!(rotation_for("a"), 0x8601_ec8c);
        assert_eq!(rotation_for("foobar"), 0xf739_67e8);
    }

    #[test]
    fn mirror_is_the_buddy_and_never_the_primary() {
        for nodes in 2..=7 {
            for rotation in [0, 1, 5, u32::MAX] {
                let l = Layout {
                    stripe_pages: 3,
                    rotation,
                };
                for page in (0..200).chain([u64::MAX - 1, u64::MAX]) {
                    let p = l.place(page, nodes);
                    assert!(p.primary < nodes);
                    assert_eq!(p.mirror, Some((p.primary + 1) % nodes));
                    assert_ne!(p.mirror, Some(p.primary), "{nodes} nodes, page {page}");
                }
            }
        }
    }

    #[test]
    fn every_node_gets_stripes_in_ring_order() {
        let l = Layout::for_file("results.dat", 1);
        for nodes in 1..=5 {
            let mut count = vec![0; nodes];
            for page in 0..(10 * nodes as u64) {
                count[l.place(page, nodes).primary] += 1;
            }
            assert!(count.iter().all(|&c| c == 10), "{nodes} nodes: {count:?}");
            let first = l.place(0, nodes).primary;
            assert_eq!(l.place(1, nodes).primary, (first + 1) % nodes);
        }
    }

    #[test]
    fn stripe_pages_group_consecutive_pages() {
        let l = Layout {
            stripe_pages: 4,
            rotation: 0,
        };
        let primaries: Vec<usize> = (0..12).map(|p| l.place(p, 3).primary).collect();
        assert_eq!(primaries, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
    }

    #[test]
    fn one_node_has_no_mirror() {
        let l = Layout::for_file("x", 2);
        for page in 0..10 {
            assert_eq!(
                l.place(page, 1),
                Placement {
                    primary: 0,
                    mirror: None
                }
            );
        }
        // Zero nodes or a zero stripe cannot panic.
        assert_eq!(l.place(3, 0).primary, 0);
        let zero = Layout {
            stripe_pages: 0,
            rotation: 1,
        };
        assert_eq!(zero.place(1, 2).primary, 0);
    }

    #[test]
    fn a_node_keeps_exactly_its_placed_pages_densely_in_page_order() {
        for nodes in 1..=6 {
            for stripe_pages in [1, 2, 3, 8] {
                for rotation in [0, 1, 7, u32::MAX] {
                    let l = Layout {
                        stripe_pages,
                        rotation,
                    };
                    for node in 0..nodes {
                        let mut locals = Vec::new();
                        for page in 0..(40 * stripe_pages as u64) {
                            let p = l.place(page, nodes);
                            let keeps = p.primary == node || p.mirror == Some(node);
                            let local = l.local_index(page, nodes, node);
                            assert_eq!(
                                local.is_some(),
                                keeps,
                                "{nodes} nodes, stripe {stripe_pages}, rotation {rotation}, node {node}, page {page}"
                            );
                            locals.extend(local);
                        }
                        // Strictly increasing with no gap; at most the first round's two
                        // stripes are skipped (the ring starts at the file's rotation).
                        assert!(locals.windows(2).all(|w| w[1] == w[0] + 1), "{locals:?}");
                        assert!(
                            locals[0] <= 2 * u64::from(stripe_pages),
                            "{nodes} nodes, node {node}: starts at {}",
                            locals[0]
                        );
                    }
                }
            }
        }
        let l = Layout::for_file("x", 1);
        assert_eq!(l.local_index(3, 4, 4), None, "a node outside the view");
        let wide = Layout {
            stripe_pages: 1,
            rotation: 1,
        };
        assert_eq!(wide.local_index(u64::MAX, 2, 0), None, "past 2^64");
    }

    #[test]
    fn names_spread_the_first_stripe() {
        let firsts: std::collections::BTreeSet<usize> = (0..32)
            .map(|i| {
                Layout::for_file(&format!("small-{i}"), 1)
                    .place(0, 4)
                    .primary
            })
            .collect();
        assert_eq!(firsts.len(), 4, "small files all start on {firsts:?}");
    }
}

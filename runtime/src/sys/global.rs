//! Typed access to global memory.
//!
//! Global memory is ordinary memory of this process whose pages the SVM maps and protects, and
//! that other ranks read and write through the coherence protocol. Loads and stores here are
//! volatile, so the compiler neither removes nor merges them: every access reaches the page,
//! where the protocol keeps memory sequentially consistent. For flags and counters shared
//! between ranks, use [`GlobalArray::atomic_u64`] with `SeqCst` (the hardware may otherwise
//! reorder a store after a later load, even on one rank).

use std::marker::PhantomData;
use std::sync::atomic::AtomicU64;

/// Plain old data: any bit pattern is a valid value and the type holds no pointers to private
/// memory, so its bytes can live in global memory and move between ranks.
///
/// # Safety
/// Implement only for `Copy` types without padding for which every bit pattern is valid.
pub unsafe trait Pod: Copy + Send + Sync + 'static {}

macro_rules! pod {
    ($($t:ty),*) => {$(
        // SAFETY: a primitive number: no padding, and every bit pattern is a value.
        unsafe impl Pod for $t {}
    )*};
}
pod!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);
// SAFETY: an array of Pod has no padding between elements and every bit pattern is valid.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// A typed global array: `len` elements at the same address on every rank.
///
/// It borrows the runtime (`'p`), so it cannot outlive `finalize`.
#[derive(Debug)]
pub struct GlobalArray<'p, T: Pod> {
    addr: usize,
    len: usize,
    _t: PhantomData<(&'p (), *mut T)>,
}

// SAFETY: the array is shared memory by design; every access is volatile or atomic, and
// coherence is the SVM's job, so moving or sharing the handle between threads is fine.
unsafe impl<T: Pod> Send for GlobalArray<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Pod> Sync for GlobalArray<'_, T> {}

impl<'p, T: Pod> GlobalArray<'p, T> {
    /// Wraps `len` elements at `addr`. Only the SVM's allocator calls this, for memory it
    /// allocated: `addr..addr + len * size_of::<T>()` is global memory aligned for `T` that stays
    /// allocated for `'p` (the element accessors rely on it).
    pub(crate) fn new(addr: usize, len: usize) -> Self {
        GlobalArray {
            addr,
            len,
            _t: PhantomData,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of element 0, the same on every rank.
    pub fn as_ptr(&self) -> *mut T {
        self.addr as *mut T
    }

    /// Size in bytes.
    pub fn byte_len(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }

    /// Reads element `i`. Panics if `i` is out of bounds.
    #[inline]
    pub fn get(&self, i: usize) -> T {
        assert!(
            i < self.len,
            "index {i} out of bounds of a global array of {}",
            self.len
        );
        // SAFETY: i is in bounds (checked), the memory is allocated and aligned for T for 'p
        // (the allocator's contract with `new`), and T is Pod, so any bytes there are a valid T. The SVM
        // makes the page readable on the fault this load may take.
        unsafe { std::ptr::read_volatile(self.as_ptr().add(i)) }
    }

    /// Writes element `i`. Panics if `i` is out of bounds.
    #[inline]
    pub fn set(&self, i: usize, v: T) {
        assert!(
            i < self.len,
            "index {i} out of bounds of a global array of {}",
            self.len
        );
        // SAFETY: as in get; the SVM makes the page writable on the fault this store may take.
        unsafe { std::ptr::write_volatile(self.as_ptr().add(i), v) }
    }

    /// Copies `src` into the array from element `start`.
    pub fn write_from(&self, start: usize, src: &[T]) {
        for (k, v) in src.iter().enumerate() {
            self.set(start + k, *v);
        }
    }

    /// Copies elements `start..start + dst.len()` into `dst`.
    pub fn read_into(&self, start: usize, dst: &mut [T]) {
        for (k, d) in dst.iter_mut().enumerate() {
            *d = self.get(start + k);
        }
    }

    /// Elements `range` as a vector.
    pub fn to_vec(&self, range: std::ops::Range<usize>) -> Vec<T> {
        range.map(|i| self.get(i)).collect()
    }

    /// The 8 bytes at byte offset `8 * i` as an atomic word, for flags, counters and
    /// lock-free algorithms across ranks. Panics if out of bounds or not 8-byte aligned.
    pub fn atomic_u64(&self, i: usize) -> &AtomicU64 {
        let off = i * 8;
        assert!(
            off + 8 <= self.byte_len(),
            "atomic word {i} out of bounds of a global array of {} bytes",
            self.byte_len()
        );
        let p = self.addr + off;
        assert!(p % 8 == 0, "global array is not 8-byte aligned");
        // SAFETY: p..p+8 is inside the array (checked), aligned (checked), and stays allocated
        // for 'p, which bounds the returned reference; AtomicU64 has the layout of u64 and is
        // only accessed atomically through this reference.
        unsafe { &*(p as *const AtomicU64) }
    }
}

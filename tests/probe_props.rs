//! Property tests of the header probe: random and mutated headers never panic, never make it
//! allocate more than 1 MiB, and never ask for more than PROBE_MAX bytes.

#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use imgchain::image::probe::{PROBE_MAX, ProbeError, probe};
use proptest::prelude::*;

/// Records the largest single allocation made while `TRACK` is set on this thread.
struct Tracking;
static LARGEST: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACK.with(Cell::get) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if TRACK.with(Cell::get) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Probes with allocation tracking; checks the result's invariants.
fn checked_probe(prefix: &[u8], file_len: u64) {
    LARGEST.store(0, Ordering::Relaxed);
    TRACK.with(|t| t.set(true));
    let r = probe(prefix, file_len);
    TRACK.with(|t| t.set(false));
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= 1 << 20, "allocated {largest} bytes");
    match r {
        Err(ProbeError::Short { need }) => {
            assert!(
                need > prefix.len(),
                "asks for {need} with {} given",
                prefix.len()
            );
            assert!(need <= PROBE_MAX);
            assert!(need as u64 <= file_len);
        }
        Err(ProbeError::Invalid(msg)) => assert!(!msg.is_empty()),
        Ok(p) => {
            if let Some(h) = p.qcow2 {
                assert!((9..=21).contains(&h.cluster_bits));
                assert!(h.backing_file.as_ref().is_none_or(|b| b.len() <= 1023));
            }
        }
    }
}

/// A valid qcow2 v3 header with a backing file and the extensions qemu-img writes.
fn seed() -> Vec<u8> {
    let mut h = vec![0u8; 0x1000];
    let put32 =
        |h: &mut Vec<u8>, off: usize, v: u32| h[off..off + 4].copy_from_slice(&v.to_be_bytes());
    let put64 =
        |h: &mut Vec<u8>, off: usize, v: u64| h[off..off + 8].copy_from_slice(&v.to_be_bytes());
    h[..4].copy_from_slice(b"QFI\xfb");
    put32(&mut h, 4, 3);
    put64(&mut h, 8, 0x210);
    put32(&mut h, 16, 10);
    put32(&mut h, 20, 16);
    put64(&mut h, 24, 64 << 20);
    put32(&mut h, 36, 1);
    put64(&mut h, 40, 0x30000);
    put64(&mut h, 48, 0x10000);
    put32(&mut h, 56, 1);
    put32(&mut h, 96, 4);
    put32(&mut h, 100, 112);
    put32(&mut h, 112, 0xe279_2aca);
    put32(&mut h, 116, 5);
    h[120..125].copy_from_slice(b"qcow2");
    put32(&mut h, 128, 0x6803_f857);
    put32(&mut h, 132, 48);
    h[136 + 2..136 + 12].copy_from_slice(b"dirty bit\0");
    h[0x210..0x21a].copy_from_slice(b"base.qcow2");
    h
}

const FILE_LEN: u64 = 0x40000;

#[test]
fn the_seed_is_valid() {
    let p = probe(&seed(), FILE_LEN).unwrap().qcow2.unwrap();
    assert_eq!(p.backing_file.as_deref(), Some(&b"base.qcow2"[..]));
    assert_eq!(p.backing_format.as_deref(), Some("qcow2"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048), extra in 0u64..1 << 40) {
        checked_probe(&data, data.len() as u64 + extra);
        checked_probe(&data, data.len() as u64);
    }

    #[test]
    fn mutated_qcow2_headers(
        edits in proptest::collection::vec((0usize..0x240, any::<u8>()), 1..12),
        words in proptest::collection::vec((0usize..0x230, any::<u32>()), 0..3),
        cut in 0usize..0x1000,
        file_len in prop_oneof![Just(FILE_LEN), 0u64..0x1000, any::<u64>()],
    ) {
        let mut h = seed();
        for (off, b) in edits {
            h[off] = b;
        }
        for (off, w) in words {
            h[off..off + 4].copy_from_slice(&w.to_be_bytes());
        }
        checked_probe(&h, file_len.max(h.len() as u64));
        checked_probe(&h[..cut], file_len.max(cut as u64));
    }
}

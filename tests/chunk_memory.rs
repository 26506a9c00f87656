//! What the `Bytes` chunks a consumer keeps cost in heap. A binary of its own: it installs a
//! global allocator that counts live heap bytes, and its tests must not overlap.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use process_transport::Event;

use common::{py, serial_lock};

/// The system allocator, keeping count of the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is only
// bookkeeping on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, hence from `System`, with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Added first, so the count never dips below what is really live.
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What keeping every chunk of one child's stdout cost.
struct Kept {
    chunks: usize,
    bytes: usize,
    /// Live heap growth from before the spawn to after the transport was dropped, with the
    /// chunks still held: what they pin.
    pinned: usize,
    /// Chunk lengths, sorted.
    lengths: Vec<usize>,
}

/// Spawns a child that writes `count` blocks of `block` bytes to stdout, pausing after each
/// so that each tends to be read on its own, keeps every chunk, and measures what they pin.
fn keep_every_chunk(block: usize, count: usize, pipe_capacity: Option<usize>) -> Kept {
    let _serial = serial_lock();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let script = format!(
        "import os, time\nb = b'x' * {block}\nfor _ in range({count}):\n    os.write(1, b)\n    \
         time.sleep(0.002)"
    );
    // A first child, so that the reaper, signal handling and the runtime's lazily built
    // parts already exist and do not count.
    rt.block_on(async {
        let mut warm_up = py("pass").spawn().unwrap();
        while warm_up.next().await.is_some() {}
    });
    let mut kept: Vec<Bytes> = Vec::with_capacity(count * 2);
    let before = LIVE.load(Ordering::Relaxed);
    rt.block_on(async {
        let mut command = py(&script);
        if let Some(capacity) = pipe_capacity {
            command.pipe_capacity(1, capacity);
        }
        let mut child = command.spawn().unwrap();
        let run = async {
            while let Some(event) = child.next().await {
                if let Event::Data { fd: 1, data } = event {
                    kept.push(data);
                }
            }
        };
        tokio::time::timeout(2 * common::LIMIT, run)
            .await
            .expect("the child stalled");
    });
    let after = LIVE.load(Ordering::Relaxed);
    drop(rt);
    let mut lengths: Vec<usize> = kept.iter().map(Bytes::len).collect();
    lengths.sort_unstable();
    Kept {
        chunks: kept.len(),
        bytes: lengths.iter().sum(),
        pinned: after.saturating_sub(before),
        lengths,
    }
}

/// Checks the pinning bound: at most twice the kept bytes, plus room for the allocations
/// a spawn and its events leave behind on their own.
fn assert_pins_at_most_twice(what: &str, kept: &Kept, block: usize, count: usize) {
    const SLACK: usize = 1 << 20;
    let median = kept.lengths[kept.lengths.len() / 2];
    eprintln!(
        "{what}: {} chunks (median {median} bytes), {} bytes kept, {} bytes of heap pinned",
        kept.chunks, kept.bytes, kept.pinned
    );
    assert_eq!(
        kept.bytes,
        block * count,
        "{what}: bytes lost or duplicated"
    );
    // Most blocks must arrive as chunks of their own, or the test measures something else.
    assert!(
        kept.chunks >= count / 3 && median < 2 * block,
        "{what}: the blocks were not read one by one: {} chunks, median {median}",
        kept.chunks
    );
    assert!(
        kept.pinned <= 2 * kept.bytes + SLACK,
        "{what}: {} kept bytes pin {} bytes of heap ({:.1}x)",
        kept.bytes,
        kept.pinned,
        kept.pinned as f64 / kept.bytes as f64
    );
}

#[test]
fn kept_chunks_of_a_few_kib_do_not_pin_default_read_buffers() {
    // 4.5 KB chunks: above the old small-read cut-off of a 68 KiB read buffer.
    let (block, count) = (4500, 1500);
    let kept = keep_every_chunk(block, count, None);
    assert_pins_at_most_twice("4.5 KB from a default pipe", &kept, block, count);
}

#[test]
fn kept_chunks_of_a_third_of_the_read_buffer_do_not_pin_it() {
    let (block, count) = (20_000, 600);
    let kept = keep_every_chunk(block, count, None);
    assert_pins_at_most_twice("20 KB from a default pipe", &kept, block, count);
}

#[test]
fn kept_chunks_from_a_mebibyte_pipe_do_not_pin_its_large_read_buffers() {
    // Reads from a 1 MiB pipe go into 256 KiB buffers.
    let (block, count) = (20_000, 600);
    let kept = keep_every_chunk(block, count, Some(1 << 20));
    assert_pins_at_most_twice("20 KB from a 1 MiB pipe", &kept, block, count);
    let (block, count) = (100_000, 200);
    let kept = keep_every_chunk(block, count, Some(1 << 20));
    assert_pins_at_most_twice("100 KB from a 1 MiB pipe", &kept, block, count);
}

#[test]
fn kept_chunks_that_fill_most_of_the_read_buffer_stay_within_twice_their_size() {
    // These are handed over without a copy, with the whole buffer behind them.
    let (block, count) = (45_000, 300);
    let kept = keep_every_chunk(block, count, None);
    assert_pins_at_most_twice("45 KB from a default pipe", &kept, block, count);
}

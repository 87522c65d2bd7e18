//! A disk image as fixed-size chunks.
//!
//! Reading: only chunks that hold data are looked at (`SEEK_DATA` /
//! `SEEK_HOLE` walk the file's extents, so a sparse 10 GiB disk with 100 MiB
//! written costs 100 MiB of reading); chunks are hashed (SHA-256) on every
//! core; an all-zero chunk counts as a hole. Writing back: chunks go to their
//! offsets in a sparse file, zero blocks inside a chunk are skipped, so holes
//! stay holes.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Chunk size of new snapshots.
pub const CHUNK_SIZE: u64 = 4 << 20;
/// Block size inside a chunk that restore skips when zero.
const BLOCK: usize = 4096;

/// One hashed chunk of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedChunk {
    pub offset: u64,
    pub hash: String,
}

/// Offsets of the `chunk`-aligned chunks of `file` (of `size` bytes) that
/// contain any allocated data.
pub fn data_chunks(file: &File, size: u64, chunk: u64) -> std::io::Result<Vec<u64>> {
    let fd = file.as_raw_fd();
    let mut out: Vec<u64> = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        // SAFETY: lseek on an open fd; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after pos
            }
            return Err(e);
        }
        let data = data as u64;
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            size
        } else {
            (hole as u64).min(size)
        };
        if hole <= data {
            break;
        }
        for c in (data / chunk)..=((hole - 1) / chunk) {
            let off = c * chunk;
            if out.last() != Some(&off) {
                out.push(off);
            }
        }
        pos = hole;
    }
    Ok(out)
}

/// Whether every byte is zero.
pub fn is_zero(buf: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: u64 has no invalid bit patterns; align_to only reinterprets.
        unsafe { buf.align_to::<u64>() }
    };
    head.iter().all(|b| *b == 0) && words.iter().all(|w| *w == 0) && tail.iter().all(|b| *b == 0)
}

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Chunk offset -> (XXH3-128 of the content, SHA-256 of the same content),
/// from a previous snapshot: a chunk whose fast hash is unchanged keeps its
/// SHA-256 without computing it again (XXH3 runs at memory speed, SHA-256
/// at ~2 GB/s). Only the guest could make two contents collide, and then
/// only in its own workspace.
pub type Memo = std::collections::HashMap<u64, (u128, String)>;

/// Reads and hashes every data chunk of the disk at `path` on `threads`
/// threads (blocking). Returns the disk size and its non-zero chunks in
/// offset order.
pub fn hash_disk(path: &Path, chunk: u64, threads: usize) -> Result<(u64, Vec<HashedChunk>)> {
    hash_disk_memo(path, chunk, threads, &Memo::new()).map(|(s, c, _)| (s, c))
}

/// [`hash_disk`] reusing `memo`; also returns the memo of this disk.
pub fn hash_disk_memo(
    path: &Path,
    chunk: u64,
    threads: usize,
    memo: &Memo,
) -> Result<(u64, Vec<HashedChunk>, Memo)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let offsets = data_chunks(&file, size, chunk).map_err(|e| Error::io(path, e))?;
    let next = AtomicUsize::new(0);
    let found: Mutex<Vec<(HashedChunk, u128)>> = Mutex::new(Vec::with_capacity(offsets.len()));
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut buf = vec![0u8; chunk as usize];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&off) = offsets.get(i) else { return };
                    let len = chunk.min(size - off) as usize;
                    let buf = &mut buf[..len];
                    if let Err(e) = file.read_exact_at(buf, off) {
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Error::io(path, e));
                        return;
                    }
                    if is_zero(buf) {
                        continue;
                    }
                    let fast = xxhash_rust::xxh3::xxh3_128(buf);
                    let hash = match memo.get(&off) {
                        Some((f, sha)) if *f == fast => sha.clone(),
                        _ => sha256_hex(buf),
                    };
                    let h = (HashedChunk { offset: off, hash }, fast);
                    found.lock().unwrap_or_else(|p| p.into_inner()).push(h);
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    found.sort_by_key(|(c, _)| c.offset);
    let memo: Memo = found
        .iter()
        .map(|(c, f)| (c.offset, (*f, c.hash.clone())))
        .collect();
    let chunks = found.into_iter().map(|(c, _)| c).collect();
    Ok((size, chunks, memo))
}

/// Reads `len` bytes at `offset` of `path` (blocking).
pub fn read_chunk(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

/// Writes `data` at `offset`, skipping zero blocks (they stay holes in a
/// sparse file that was empty there).
pub fn write_sparse_at(file: &File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let mut i = 0;
    while i < data.len() {
        let end = (i + BLOCK).min(data.len());
        if is_zero(&data[i..end]) {
            i = end;
            continue;
        }
        // Extend the run over following non-zero blocks: fewer syscalls.
        let start = i;
        let mut stop = end;
        while stop < data.len() {
            let next = (stop + BLOCK).min(data.len());
            if is_zero(&data[stop..next]) {
                break;
            }
            stop = next;
        }
        file.write_all_at(&data[start..stop], offset + start as u64)?;
        i = stop;
    }
    Ok(())
}

/// Bytes actually allocated to `path` on the host.
pub fn allocated_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_only_data_extents_and_skips_zero_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("d");
        let f = File::create(&p).expect("create");
        let chunk = 1 << 20;
        f.set_len(64 << 20).expect("len");
        f.write_all_at(b"hello", 3 * chunk + 10).expect("write");
        f.write_all_at(&vec![7u8; chunk as usize + 5], 10 * chunk)
            .expect("write");
        f.write_all_at(&[0u8; 100], 20 * chunk).expect("zeros");
        drop(f);
        let f = File::open(&p).expect("open");
        let offs = data_chunks(&f, 64 << 20, chunk).expect("walk");
        assert!(offs.contains(&(3 * chunk)) && offs.contains(&(11 * chunk)));
        assert!(offs.len() <= 5, "{offs:?}");
        let (size, chunks) = hash_disk(&p, chunk, 2).expect("hash");
        assert_eq!(size, 64 << 20);
        let at: Vec<u64> = chunks.iter().map(|c| c.offset / chunk).collect();
        assert_eq!(at, vec![3, 10, 11], "the zero chunk at 20 is a hole");
    }

    #[test]
    fn sparse_write_skips_zero_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("d");
        let f = File::create(&p).expect("create");
        f.set_len(8 << 20).expect("len");
        let mut data = vec![0u8; 4 << 20];
        data[5000] = 1;
        write_sparse_at(&f, 0, &data).expect("write");
        f.sync_all().expect("sync");
        assert!(allocated_bytes(&p).expect("stat") <= 64 * 1024);
        let back = read_chunk(&p, 0, 4 << 20).expect("read");
        assert_eq!(back, data);
    }
}

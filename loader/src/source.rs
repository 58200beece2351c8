//! Positioned, bounded reads from a model file or an in-memory buffer, and the cursor the header
//! parsers use. Nothing here reads more than a small window at once, so memory stays bounded
//! whatever the file size: this is how a 10 GB model atomizes on a 24 GB machine.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where a model's bytes come from: a file read with `pread`, or a buffer (tests, fuzzing).
pub trait ByteSource: Send + Sync {
    /// The path used in error messages.
    fn path(&self) -> &Path;
    /// Total length in bytes.
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`; the caller has checked the range against [`ByteSource::len`].
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A model file on disk, read by offset without seeking, so several threads may share it.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
    path: PathBuf,
}

impl FileSource {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        Ok(Self {
            file,
            len: meta.len(),
            path,
        })
    }
}

impl ByteSource for FileSource {
    fn path(&self) -> &Path {
        &self.path
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
        }
        #[cfg(windows)]
        {
            let mut done = 0;
            while done < buf.len() {
                let n = std::os::windows::fs::FileExt::seek_read(
                    &self.file,
                    &mut buf[done..],
                    offset + done as u64,
                )?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                done += n;
            }
            Ok(())
        }
    }
}

/// A model held in memory, labelled with a name for error messages.
#[derive(Debug, Clone)]
pub struct MemorySource {
    bytes: Vec<u8>,
    label: PathBuf,
}

impl MemorySource {
    pub fn new(label: impl Into<PathBuf>, bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            label: label.into(),
        }
    }
}

impl ByteSource for MemorySource {
    fn path(&self) -> &Path {
        &self.label
    }
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&end| end <= self.bytes.len())
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self.bytes[start..end]);
        Ok(())
    }
}

/// Reads `len` bytes at `offset`, turning a short file into [`Error::Truncated`].
pub(crate) fn read_range(
    source: &dyn ByteSource,
    offset: u64,
    buf: &mut [u8],
    what: impl Fn() -> String,
) -> Result<()> {
    let needed = buf.len() as u64;
    if offset.checked_add(needed).is_none_or(|end| end > source.len()) {
        return Err(Error::Truncated {
            path: source.path().to_path_buf(),
            what: what(),
            offset,
            needed,
            file_len: source.len(),
        });
    }
    source.read_exact_at(offset, buf).map_err(|e| Error::ReadFailed {
        path: source.path().to_path_buf(),
        what: what(),
        offset,
        source: e,
    })
}

/// Size of the read-ahead window of [`HeaderCursor`].
const WINDOW: usize = 64 * 1024;

/// A forward cursor over a file header with a fixed read-ahead window. Every length it is asked
/// to read is checked against the bytes left in the file before anything is allocated, so a
/// corrupt length field can never cause a huge allocation.
pub(crate) struct HeaderCursor<'a> {
    source: &'a dyn ByteSource,
    pos: u64,
    window: Vec<u8>,
    window_start: u64,
}

impl<'a> HeaderCursor<'a> {
    pub(crate) fn new(source: &'a dyn ByteSource, pos: u64) -> Self {
        Self {
            source,
            pos,
            window: Vec::new(),
            window_start: 0,
        }
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.source.path().to_path_buf()
    }

    pub(crate) fn file_len(&self) -> u64 {
        self.source.len()
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.source.len().saturating_sub(self.pos)
    }

    /// Fails with [`Error::DeclaredLengthTooLarge`] unless `count` items of at least
    /// `min_item_bytes` each can fit in the rest of the file.
    pub(crate) fn check_declared(
        &self,
        count: u64,
        min_item_bytes: u64,
        unit: &'static str,
        what: impl FnOnce() -> String,
        at: u64,
    ) -> Result<()> {
        let limit = self.remaining() / min_item_bytes.max(1);
        if count > limit {
            return Err(Error::DeclaredLengthTooLarge {
                path: self.path(),
                what: what(),
                offset: at,
                declared: count,
                unit,
                limit,
            });
        }
        Ok(())
    }

    /// Returns the next `n` bytes and advances. `n` must already be checked to be modest (at
    /// most the rest of the file); bytes beyond the window are read straight into a new buffer.
    pub(crate) fn take(&mut self, n: u64, what: impl Fn() -> String) -> Result<Vec<u8>> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                path: self.path(),
                what: what(),
                offset: self.pos,
                needed: n,
                file_len: self.file_len(),
            });
        }
        // `n` fits in the file, and files we can read fit in the address space on 64-bit hosts.
        let mut out = vec![0u8; n as usize];
        self.fill(&mut out, what)?;
        Ok(out)
    }

    /// Reads exactly `N` bytes.
    pub(crate) fn array<const N: usize>(&mut self, what: impl Fn() -> String) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        self.fill(&mut out, what)?;
        Ok(out)
    }

    fn fill(&mut self, out: &mut [u8], what: impl Fn() -> String) -> Result<()> {
        let n = out.len() as u64;
        if n > self.remaining() {
            return Err(Error::Truncated {
                path: self.path(),
                what: what(),
                offset: self.pos,
                needed: n,
                file_len: self.file_len(),
            });
        }
        let window_end = self.window_start + self.window.len() as u64;
        if self.pos >= self.window_start && self.pos + n <= window_end {
            let at = (self.pos - self.window_start) as usize;
            out.copy_from_slice(&self.window[at..at + out.len()]);
        } else if out.len() >= WINDOW {
            read_range(self.source, self.pos, out, what)?;
        } else {
            let len = (WINDOW as u64).min(self.remaining()) as usize;
            self.window.resize(len, 0);
            read_range(self.source, self.pos, &mut self.window, what)?;
            self.window_start = self.pos;
            out.copy_from_slice(&self.window[..out.len()]);
        }
        self.pos += n;
        Ok(())
    }

    pub(crate) fn u8(&mut self, what: impl Fn() -> String) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u16(&mut self, what: impl Fn() -> String) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u32(&mut self, what: impl Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: impl Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
}

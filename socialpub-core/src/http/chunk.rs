//! Reading media in fixed-size chunks with exact byte ranges, without loading whole files.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::{Error, Result};
use crate::media::MediaSource;

/// One chunk of a media item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The chunk's index (0-based) at the reader's chunk size.
    pub index: usize,
    /// The offset of its first byte.
    pub offset: u64,
    /// Its bytes.
    pub data: Bytes,
}

impl Chunk {
    /// The offset of its last byte (inclusive), as `Content-Range` wants it.
    pub fn last_byte(&self) -> u64 {
        (self.offset + self.data.len() as u64).saturating_sub(1)
    }

    /// The offset just past its last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }

    /// `bytes FIRST-LAST/TOTAL`.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.offset, self.last_byte(), total)
    }
}

enum Source {
    File(tokio::fs::File),
    Bytes(Bytes),
}

/// Reads a file or an in-memory buffer chunk by chunk, or at any offset (to resume an upload
/// where the server says it stopped). Memory use is one chunk at a time.
pub struct ChunkReader {
    source: Source,
    len: u64,
    chunk_size: usize,
}

impl std::fmt::Debug for ChunkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkReader")
            .field("len", &self.len)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

impl ChunkReader {
    /// Opens `source` for reading in chunks of `chunk_size` bytes. URL sources cannot be read.
    pub async fn open(source: &MediaSource, chunk_size: usize) -> Result<ChunkReader> {
        if chunk_size == 0 {
            return Err(Error::invalid_input("the chunk size must be positive"));
        }
        let (source, len) = match source {
            MediaSource::File { path } => {
                let f = tokio::fs::File::open(path).await.map_err(|e| {
                    Error::invalid_input(format!("cannot open {}: {e}", path.display()))
                        .with_source(e)
                })?;
                let len = f.metadata().await?.len();
                (Source::File(f), len)
            }
            MediaSource::Bytes { data } => (Source::Bytes(data.clone()), data.len() as u64),
            MediaSource::Url { .. } => {
                return Err(Error::invalid_input(
                    "media from a URL cannot be uploaded in chunks; give a file or bytes",
                ));
            }
        };
        Ok(ChunkReader {
            source,
            len,
            chunk_size,
        })
    }

    /// Total bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// How many chunks the source splits into.
    pub fn chunk_count(&self) -> usize {
        usize::try_from(self.len.div_ceil(self.chunk_size as u64)).unwrap_or(usize::MAX)
    }

    /// Up to `max_len` bytes from `offset` (fewer only at the end).
    pub async fn read_at(&mut self, offset: u64, max_len: usize) -> Result<Bytes> {
        if offset > self.len {
            return Err(Error::internal(format!(
                "read at {offset} past the end ({})",
                self.len
            )));
        }
        let n = usize::try_from((self.len - offset).min(max_len as u64)).unwrap_or(max_len);
        match &mut self.source {
            Source::Bytes(b) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                Ok(b.slice(start..start + n))
            }
            Source::File(f) => {
                f.seek(std::io::SeekFrom::Start(offset)).await?;
                let mut buf = BytesMut::zeroed(n);
                f.read_exact(&mut buf).await.map_err(|e| {
                    Error::invalid_input(format!(
                        "the media file changed while it was uploaded: {e}"
                    ))
                    .with_source(e)
                })?;
                Ok(buf.freeze())
            }
        }
    }

    /// The chunk starting at `offset` (at most one chunk size long).
    pub async fn chunk_at(&mut self, offset: u64) -> Result<Chunk> {
        let data = self.read_at(offset, self.chunk_size).await?;
        Ok(Chunk {
            index: usize::try_from(offset / self.chunk_size as u64).unwrap_or(usize::MAX),
            offset,
            data,
        })
    }

    /// Chunk number `index`.
    pub async fn chunk(&mut self, index: usize) -> Result<Chunk> {
        self.chunk_at(index as u64 * self.chunk_size as u64).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_chunks_have_exact_ranges() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f.bin");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let mut r = ChunkReader::open(&MediaSource::File { path }, 4096)
            .await
            .expect("open");
        assert_eq!(r.chunk_count(), 3);
        let mut all = Vec::new();
        for i in 0..r.chunk_count() {
            let c = r.chunk(i).await.expect("chunk");
            all.extend_from_slice(&c.data);
            if i == 2 {
                assert_eq!(c.content_range(r.len()), "bytes 8192-9999/10000");
            }
        }
        assert_eq!(all, data);
        let mid = r.read_at(5000, 10).await.expect("read");
        assert_eq!(&mid[..], &data[5000..5010]);
        assert!(r.read_at(10_001, 1).await.is_err());
    }

    #[tokio::test]
    async fn bytes_and_url_sources() {
        let mut r = ChunkReader::open(
            &MediaSource::Bytes {
                data: Bytes::from_static(b"abcdef"),
            },
            4,
        )
        .await
        .expect("open");
        assert_eq!(&r.chunk(1).await.expect("c").data[..], b"ef");
        let url = MediaSource::Url {
            url: url::Url::parse("https://example.com/a.png").expect("url"),
        };
        assert!(ChunkReader::open(&url, 4).await.is_err());
    }
}

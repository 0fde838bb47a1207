//! Media items: kind, source, MIME type, alt text and what is known of size, dimensions and
//! duration, probed from the file headers without reading whole files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use url::Url;

use crate::error::{Error, Result};

/// The kind of a media item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MediaKind {
    /// A still image (JPEG, PNG, WebP, …).
    Image,
    /// An animated GIF.
    Gif,
    /// A video.
    Video,
}

impl MediaKind {
    /// The kind a MIME type implies, if any.
    pub fn from_mime(mime: &str) -> Option<MediaKind> {
        let m = mime.to_ascii_lowercase();
        if m == "image/gif" {
            Some(MediaKind::Gif)
        } else if m.starts_with("image/") {
            Some(MediaKind::Image)
        } else if m.starts_with("video/") {
            Some(MediaKind::Video)
        } else {
            None
        }
    }

    /// `image`, `gif` or `video`.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Gif => "gif",
            MediaKind::Video => "video",
        }
    }
}

/// Where a media item's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum MediaSource {
    /// A local file, streamed when uploaded.
    File {
        /// The file's path.
        path: PathBuf,
    },
    /// Bytes held in memory (persisted as base64; keep these small).
    Bytes {
        /// The bytes.
        #[serde(with = "crate::serde_util::base64_bytes")]
        data: Bytes,
    },
    /// A public URL the platform fetches itself (only where [`crate::Capabilities::media_from_url`]).
    Url {
        /// The URL.
        url: Url,
    },
}

/// One image, GIF or video attached to a post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Media {
    /// Image, GIF or video.
    pub kind: MediaKind,
    /// Where the bytes come from.
    pub source: MediaSource,
    /// The MIME type, sniffed from the bytes where possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// A file name to present to the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Alt text for people using screen readers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_text: Option<String>,
    /// Size in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Width in pixels, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Duration (videos, GIFs), when known.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::serde_util::opt_duration_ms"
    )]
    pub duration: Option<Duration>,
}

/// How many leading bytes are read to sniff a type and image dimensions.
const SNIFF_BYTES: usize = 64 * 1024;
/// The largest `moov` box read to find a video's duration and dimensions.
const MAX_MOOV_BYTES: u64 = 32 * 1024 * 1024;

impl Media {
    /// A media item of `kind` from `source`, nothing else known.
    pub fn new(kind: MediaKind, source: MediaSource) -> Self {
        Media {
            kind,
            source,
            mime: None,
            filename: None,
            alt_text: None,
            size: None,
            width: None,
            height: None,
            duration: None,
        }
    }

    /// Opens a file and probes it: size, MIME type (sniffed from magic bytes, else from the
    /// extension), kind, image dimensions, and an MP4/MOV's duration and dimensions. Only the
    /// header (and a video's `moov` box) is read.
    ///
    /// ```no_run
    /// # async fn f() -> socialpub_core::Result<()> {
    /// let video = socialpub_core::Media::from_path("clip.mp4").await?;
    /// println!("{:?} {:?}", video.mime, video.duration);
    /// # Ok(()) }
    /// ```
    pub async fn from_path(path: impl AsRef<Path>) -> Result<Media> {
        let path = path.as_ref();
        let mut file = tokio::fs::File::open(path).await.map_err(|e| {
            Error::invalid_input(format!("cannot open media file {}: {e}", path.display()))
                .with_source(e)
        })?;
        let size = file.metadata().await?.len();
        let mut head = vec![0u8; SNIFF_BYTES.min(usize::try_from(size).unwrap_or(SNIFF_BYTES))];
        file.read_exact(&mut head).await?;
        let filename = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let mime = sniff_mime(&head, filename.as_deref()).ok_or_else(|| {
            Error::invalid_input(format!(
                "cannot tell the media type of {}: not a known image or video format",
                path.display()
            ))
        })?;
        let kind = MediaKind::from_mime(&mime).ok_or_else(|| {
            Error::invalid_input(format!(
                "{} is {mime}, not an image or video",
                path.display()
            ))
        })?;
        let mut media = Media::new(
            kind,
            MediaSource::File {
                path: path.to_path_buf(),
            },
        );
        media.mime = Some(mime);
        media.filename = filename;
        media.size = Some(size);
        media.probe_dimensions(&head);
        if kind == MediaKind::Video
            && let Some(info) = mp4::probe_file(&mut file, size).await?
        {
            media.duration = info.duration;
            media.width = media.width.or(info.width);
            media.height = media.height.or(info.height);
        }
        Ok(media)
    }

    /// A media item held in memory, probed like [`Media::from_path`]. When the type cannot be
    /// sniffed the kind defaults to image; set it yourself for other cases.
    pub fn from_bytes(data: Bytes, filename: Option<&str>) -> Media {
        let mime = sniff_mime(&data, filename);
        let kind = mime
            .as_deref()
            .and_then(MediaKind::from_mime)
            .unwrap_or(MediaKind::Image);
        let mut media = Media::new(kind, MediaSource::Bytes { data: data.clone() });
        media.size = Some(data.len() as u64);
        media.mime = mime;
        media.filename = filename.map(str::to_owned);
        media.probe_dimensions(&data);
        if kind == MediaKind::Video
            && let Some(info) = mp4::probe_slice(&data)
        {
            media.duration = info.duration;
            media.width = media.width.or(info.width);
            media.height = media.height.or(info.height);
        }
        media
    }

    /// A media item the platform fetches from `url`.
    pub fn from_url(kind: MediaKind, url: Url) -> Media {
        Media::new(kind, MediaSource::Url { url })
    }

    /// Sets the alt text.
    pub fn with_alt_text(mut self, alt: impl Into<String>) -> Self {
        self.alt_text = Some(alt.into());
        self
    }

    /// Sets the MIME type (and the kind it implies).
    pub fn with_mime(mut self, mime: impl Into<String>) -> Self {
        let mime = mime.into();
        if let Some(kind) = MediaKind::from_mime(&mime) {
            self.kind = kind;
        }
        self.mime = Some(mime);
        self
    }

    /// Sets the duration (e.g. from your own probe).
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// Sets the dimensions.
    pub fn with_dimensions(mut self, width: u32, height: u32) -> Self {
        self.width = Some(width);
        self.height = Some(height);
        self
    }

    /// Width divided by height, when both are known.
    pub fn aspect_ratio(&self) -> Option<f64> {
        match (self.width, self.height) {
            (Some(w), Some(h)) if h > 0 => Some(f64::from(w) / f64::from(h)),
            _ => None,
        }
    }

    /// The MIME type, or a generic one for the kind.
    pub fn mime_or_default(&self) -> &str {
        self.mime.as_deref().unwrap_or(match self.kind {
            MediaKind::Image => "image/jpeg",
            MediaKind::Gif => "image/gif",
            MediaKind::Video => "video/mp4",
        })
    }

    fn probe_dimensions(&mut self, head: &[u8]) {
        if matches!(self.kind, MediaKind::Image | MediaKind::Gif)
            && let Ok(size) = imagesize::blob_size(head)
        {
            self.width = u32::try_from(size.width).ok();
            self.height = u32::try_from(size.height).ok();
        }
    }
}

/// The MIME type of `head`, sniffed from magic bytes, else guessed from `filename`.
pub fn sniff_mime(head: &[u8], filename: Option<&str>) -> Option<String> {
    if let Some(t) = infer::get(head) {
        return Some(t.mime_type().to_owned());
    }
    filename
        .and_then(|f| mime_guess::from_path(f).first())
        .map(|m| m.essence_str().to_owned())
}

/// A minimal ISO BMFF (MP4/MOV) walker: finds `moov`, then `mvhd` for the duration and the first
/// video `tkhd` for the dimensions. It seeks over `mdat`, so a large file costs a few reads.
pub mod mp4 {
    use super::*;

    /// What the walker found.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct VideoInfo {
        /// From `mvhd`: duration / timescale.
        pub duration: Option<Duration>,
        /// From the first `tkhd` with a non-zero size.
        pub width: Option<u32>,
        /// From the first `tkhd` with a non-zero size.
        pub height: Option<u32>,
    }

    /// Reads a box header at the start of `b`: (box size, type, header length).
    fn header(b: &[u8]) -> Option<(u64, [u8; 4], usize)> {
        let size32 = u32::from_be_bytes(b.get(0..4)?.try_into().ok()?);
        let kind: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        match size32 {
            1 => {
                let large = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
                Some((large, kind, 16))
            }
            0 => Some((u64::MAX, kind, 8)), // to the end
            n => Some((u64::from(n), kind, 8)),
        }
    }

    /// Probes a file: walks top-level boxes with seeks and reads `moov` only.
    pub async fn probe_file(file: &mut tokio::fs::File, len: u64) -> Result<Option<VideoInfo>> {
        let mut pos = 0u64;
        let mut hdr = [0u8; 16];
        while pos + 8 <= len {
            file.seek(std::io::SeekFrom::Start(pos)).await?;
            let n = usize::try_from((len - pos).min(16)).unwrap_or(16);
            file.read_exact(&mut hdr[..n]).await?;
            let Some((size, kind, hlen)) = header(&hdr[..n]) else {
                return Ok(None);
            };
            let size = if size == u64::MAX { len - pos } else { size };
            if size < hlen as u64 {
                return Ok(None);
            }
            if &kind == b"moov" {
                let body = size - hlen as u64;
                if body > MAX_MOOV_BYTES || pos + size > len {
                    return Ok(None);
                }
                let mut buf = vec![0u8; usize::try_from(body).unwrap_or(0)];
                file.seek(std::io::SeekFrom::Start(pos + hlen as u64))
                    .await?;
                file.read_exact(&mut buf).await?;
                return Ok(Some(parse_moov(&buf)));
            }
            pos = pos.saturating_add(size);
        }
        Ok(None)
    }

    /// Probes bytes in memory.
    pub fn probe_slice(data: &[u8]) -> Option<VideoInfo> {
        let mut pos = 0usize;
        while pos + 8 <= data.len() {
            let (size, kind, hlen) = header(&data[pos..])?;
            let size = if size == u64::MAX {
                data.len() - pos
            } else {
                usize::try_from(size).ok()?
            };
            if size < hlen || pos + size > data.len() {
                return None;
            }
            if &kind == b"moov" {
                return Some(parse_moov(&data[pos + hlen..pos + size]));
            }
            pos += size;
        }
        None
    }

    fn children(mut b: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
        std::iter::from_fn(move || {
            let (size, kind, hlen) = header(b)?;
            let size = usize::try_from(size).ok()?.min(b.len());
            if size < hlen {
                return None;
            }
            let body = &b[hlen..size];
            b = &b[size..];
            Some((kind, body))
        })
    }

    fn be32(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }

    fn be64(b: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
    }

    fn parse_moov(moov: &[u8]) -> VideoInfo {
        let mut info = VideoInfo::default();
        for (kind, body) in children(moov) {
            match &kind {
                b"mvhd" => info.duration = parse_mvhd(body),
                b"trak" if info.width.is_none() => {
                    for (k, b) in children(body) {
                        if &k == b"tkhd"
                            && let Some((w, h)) = parse_tkhd(b)
                            && w > 0
                            && h > 0
                        {
                            info.width = Some(w);
                            info.height = Some(h);
                        }
                    }
                }
                _ => {}
            }
        }
        info
    }

    fn parse_mvhd(b: &[u8]) -> Option<Duration> {
        let version = *b.first()?;
        let (timescale, duration) = if version == 1 {
            (be32(b, 20)?, be64(b, 24)?)
        } else {
            (be32(b, 12)?, u64::from(be32(b, 16)?))
        };
        if timescale == 0 {
            return None;
        }
        let ms = u128::from(duration) * 1000 / u128::from(timescale);
        Some(Duration::from_millis(u64::try_from(ms).ok()?))
    }

    fn parse_tkhd(b: &[u8]) -> Option<(u32, u32)> {
        let version = *b.first()?;
        // width and height are the last 8 bytes, 16.16 fixed point
        let at = if version == 1 { 88 } else { 76 };
        Some((be32(b, at)? >> 16, be32(b, at + 4)? >> 16))
    }

    /// Builds a minimal MP4 (`ftyp`, `moov` with `mvhd` and one `tkhd`, then an `mdat` of
    /// `payload_len` zero bytes written by the caller). Returns the header bytes. Tests and the
    /// demo use it to make large videos on the fly.
    pub fn synthetic_header(
        duration: Duration,
        width: u32,
        height: u32,
        payload_len: u64,
    ) -> Vec<u8> {
        fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
            let mut v = Vec::with_capacity(body.len() + 8);
            v.extend_from_slice(&u32::try_from(body.len() + 8).unwrap_or(0).to_be_bytes());
            v.extend_from_slice(kind);
            v.extend_from_slice(body);
            v
        }
        let mut ftyp = Vec::new();
        ftyp.extend_from_slice(b"isom");
        ftyp.extend_from_slice(&512u32.to_be_bytes());
        ftyp.extend_from_slice(b"isomiso2avc1mp41");
        let mut mvhd = vec![0u8; 100];
        mvhd[12..16].copy_from_slice(&1000u32.to_be_bytes());
        let ms = u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
        mvhd[16..20].copy_from_slice(&ms.to_be_bytes());
        let mut tkhd = vec![0u8; 84];
        tkhd[76..80].copy_from_slice(&(width << 16).to_be_bytes());
        tkhd[80..84].copy_from_slice(&(height << 16).to_be_bytes());
        let trak = boxed(b"trak", &boxed(b"tkhd", &tkhd));
        let mut moov_body = boxed(b"mvhd", &mvhd);
        moov_body.extend_from_slice(&trak);
        let mut out = boxed(b"ftyp", &ftyp);
        out.extend_from_slice(&boxed(b"moov", &moov_body));
        if payload_len + 16 > u64::from(u32::MAX) {
            out.extend_from_slice(&1u32.to_be_bytes());
            out.extend_from_slice(b"mdat");
            out.extend_from_slice(&(payload_len + 16).to_be_bytes());
        } else {
            out.extend_from_slice(&u32::try_from(payload_len + 8).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(b"mdat");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_1X1: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0,
        0, 3, 0, 0, 0, 2, 8, 6, 0, 0, 0, 0x1F, 0x15, 0xC4, 0x89,
    ];

    #[test]
    fn sniffs_png_dimensions() {
        let m = Media::from_bytes(Bytes::from_static(PNG_1X1), None);
        assert_eq!(m.kind, MediaKind::Image);
        assert_eq!(m.mime.as_deref(), Some("image/png"));
        assert_eq!((m.width, m.height), (Some(3), Some(2)));
    }

    #[test]
    fn mp4_probe_in_memory() {
        let mut data = mp4::synthetic_header(Duration::from_millis(12_500), 1080, 1920, 100);
        data.extend(std::iter::repeat_n(0u8, 100));
        let m = Media::from_bytes(Bytes::from(data), Some("v.mp4"));
        assert_eq!(m.kind, MediaKind::Video);
        assert_eq!(m.duration, Some(Duration::from_millis(12_500)));
        assert_eq!((m.width, m.height), (Some(1080), Some(1920)));
    }

    #[tokio::test]
    async fn mp4_probe_file_seeks_over_mdat() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("v.mp4");
        let payload = 3 * 1024 * 1024;
        let mut data = mp4::synthetic_header(Duration::from_secs(61), 1280, 720, payload);
        data.resize(data.len() + usize::try_from(payload).expect("fits"), 0);
        std::fs::write(&path, &data).expect("write");
        let m = Media::from_path(&path).await.expect("probe");
        assert_eq!(m.kind, MediaKind::Video);
        assert_eq!(m.size, Some(data.len() as u64));
        assert_eq!(m.duration, Some(Duration::from_secs(61)));
        assert_eq!(m.aspect_ratio().map(|r| (r * 100.0).round()), Some(178.0));
    }

    #[test]
    fn truncated_mp4_is_not_a_panic() {
        let data = mp4::synthetic_header(Duration::from_secs(1), 1, 1, 0);
        for cut in 0..data.len() {
            let _ = mp4::probe_slice(&data[..cut]);
        }
    }

    #[tokio::test]
    async fn unknown_file_is_invalid_input() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("notes.bin");
        std::fs::write(&path, b"just some text").expect("write");
        let err = Media::from_path(&path).await.expect_err("not media");
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    }
}

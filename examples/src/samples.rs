//! Sample media the demo makes on the fly: real PNG images, and large MP4 files whose header
//! is valid (duration and size probe correctly) and whose payload is zeros.

use std::path::Path;
use std::time::Duration;

use socialpub_core::media::mp4;
use socialpub_core::{Error, Result};

/// A `width`×`height` RGB PNG with a diagonal gradient from `from` to `to`.
pub fn png(width: u32, height: u32, from: [u8; 3], to: [u8; 3]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(((width * 3 + 1) * height) as usize);
    let span = (width + height).max(2) - 2;
    for y in 0..height {
        raw.push(0); // filter: none
        for x in 0..width {
            let t = f64::from(x + y) / f64::from(span.max(1));
            for c in 0..3 {
                let v = f64::from(from[c]) + (f64::from(to[c]) - f64::from(from[c])) * t;
                raw.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream of stored (uncompressed) deflate blocks: valid, and simple enough to write
/// here without a compression crate.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Writes an MP4 of `total_bytes` at `path`: a valid header (duration, width, height) followed
/// by zeros. The zeros are a sparse extent, so the file appears instantly and takes no disk.
pub fn write_video(
    path: &Path,
    total_bytes: u64,
    duration: Duration,
    width: u32,
    height: u32,
) -> Result<()> {
    let probe = mp4::synthetic_header(duration, width, height, 0).len() as u64;
    let payload = total_bytes.saturating_sub(probe);
    let header = mp4::synthetic_header(duration, width, height, payload);
    let io = |e: std::io::Error| {
        Error::internal(format!("cannot write {}: {e}", path.display())).with_source(e)
    };
    let file = std::fs::File::create(path).map_err(io)?;
    std::io::Write::write_all(&mut &file, &header).map_err(io)?;
    file.set_len(header.len() as u64 + payload).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use socialpub_core::{Media, MediaKind};

    #[test]
    fn crc_and_png_probe() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        let data = png(64, 32, [255, 0, 0], [0, 0, 255]);
        let m = Media::from_bytes(data.into(), Some("g.png"));
        assert_eq!(m.kind, MediaKind::Image);
        assert_eq!(m.mime.as_deref(), Some("image/png"));
        assert_eq!((m.width, m.height), (Some(64), Some(32)));
    }

    #[tokio::test]
    async fn video_probes_with_its_size_and_duration() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("v.mp4");
        write_video(&path, 5 * 1024 * 1024, Duration::from_secs(30), 1280, 720).expect("write");
        let m = Media::from_path(&path).await.expect("probe");
        assert_eq!(m.kind, MediaKind::Video);
        assert_eq!(m.size, Some(5 * 1024 * 1024));
        assert_eq!(m.duration, Some(Duration::from_secs(30)));
        assert_eq!((m.width, m.height), (Some(1280), Some(720)));
    }
}

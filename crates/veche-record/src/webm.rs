//! The WebM file: one VP8 video track and one Opus audio track, written as it goes (the
//! segment and its clusters of unknown size, so a file cut off anywhere, by a kill or a full
//! disk, plays up to its last whole block). Written with webm-iterable's EBML writer.

use std::io::{Read, Seek, SeekFrom, Write};

use webm_iterable::errors::TagWriterError;
use webm_iterable::matroska_spec::{Master, MatroskaSpec, SimpleBlock};
use webm_iterable::{WebmIterator, WebmWriter, WriteOptions};

/// Where the duration goes once known: an EBML Void of 9 bytes at the end of the segment's
/// Info, the size of a Duration element (a file cut off keeps it, and says no duration).
const DURATION_SLOT: [u8; 11] = [0xEC, 0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// The video track's number.
pub const VIDEO: u64 = 1;
/// The audio track's number.
pub const AUDIO: u64 = 2;
/// Opus' pre-skip at 48 kHz (the encoder's look-ahead), in samples.
const PRE_SKIP: u16 = 312;
/// A new cluster at least this often, in ms (block times are 16-bit offsets from it).
const CLUSTER_MS: u64 = 5_000;

/// Why the file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("the recording file cannot be written: {0}")]
pub struct WriteError(#[from] TagWriterError);

/// Writes a WebM file as blocks come, in time order.
pub struct Muxer<W: Write + Seek> {
    out: WebmWriter<W>,
    /// Where the duration slot is in the file.
    slot_at: u64,
    /// The open cluster's time, ms.
    cluster: Option<u64>,
    /// Time of the last block written, ms.
    last_ms: u64,
    /// Time of each track's last block (video, audio): each track's times only go up.
    last_of: [Option<u64>; 2],
}

impl<W: Write + Seek> std::fmt::Debug for Muxer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muxer")
            .field("cluster", &self.cluster)
            .field("last_ms", &self.last_ms)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Seek> Muxer<W> {
    /// Start the file: header, segment info, and the two tracks (video `width`×`height`).
    pub fn new(dest: W, width: u16, height: u16) -> Result<Self, WriteError> {
        let mut out = WebmWriter::new(dest);
        out.write(&MatroskaSpec::Ebml(Master::Full(vec![
            MatroskaSpec::EbmlVersion(1),
            MatroskaSpec::EbmlReadVersion(1),
            MatroskaSpec::EbmlMaxIdLength(4),
            MatroskaSpec::EbmlMaxSizeLength(8),
            MatroskaSpec::DocType("webm".into()),
            MatroskaSpec::DocTypeVersion(4),
            MatroskaSpec::DocTypeReadVersion(2),
        ])))?;
        out.write_advanced(
            &MatroskaSpec::Segment(Master::Start),
            WriteOptions::is_unknown_sized_element(),
        )?;
        out.write(&MatroskaSpec::Info(Master::Start))?;
        out.write(&MatroskaSpec::TimestampScale(1_000_000))?;
        out.write(&MatroskaSpec::MuxingApp("veche".into()))?;
        out.write(&MatroskaSpec::WritingApp("veche".into()))?;
        out.write_raw(0xEC, &DURATION_SLOT[2..])?;
        out.write(&MatroskaSpec::Info(Master::End))?;
        let slot_at = out
            .get_mut()
            .stream_position()
            .map_err(|source| TagWriterError::WriteError { source })?
            - DURATION_SLOT.len() as u64;
        let mut head = b"OpusHead".to_vec();
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&PRE_SKIP.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // gain
        head.push(0); // mapping family
        out.write(&MatroskaSpec::Tracks(Master::Full(vec![
            MatroskaSpec::TrackEntry(Master::Full(vec![
                MatroskaSpec::TrackNumber(VIDEO),
                MatroskaSpec::TrackUID(VIDEO),
                MatroskaSpec::TrackType(1),
                MatroskaSpec::CodecID("V_VP8".into()),
                MatroskaSpec::Video(Master::Full(vec![
                    MatroskaSpec::PixelWidth(u64::from(width.max(2))),
                    MatroskaSpec::PixelHeight(u64::from(height.max(2))),
                ])),
            ])),
            MatroskaSpec::TrackEntry(Master::Full(vec![
                MatroskaSpec::TrackNumber(AUDIO),
                MatroskaSpec::TrackUID(AUDIO),
                MatroskaSpec::TrackType(2),
                MatroskaSpec::CodecID("A_OPUS".into()),
                MatroskaSpec::CodecPrivate(head),
                MatroskaSpec::CodecDelay(u64::from(PRE_SKIP) * 1_000_000_000 / 48_000),
                MatroskaSpec::SeekPreRoll(80_000_000),
                MatroskaSpec::Audio(Master::Full(vec![
                    MatroskaSpec::SamplingFrequency(48_000.0),
                    MatroskaSpec::Channels(1),
                ])),
            ])),
        ])))?;
        Ok(Self {
            out,
            slot_at,
            cluster: None,
            last_ms: 0,
            last_of: [None; 2],
        })
    }

    /// One frame of `track` at `at_ms` (after the track's last one and not before the open
    /// cluster: it is moved up to that). A video keyframe starts a cluster, so a player
    /// can seek to it.
    pub fn block(
        &mut self,
        track: u64,
        at_ms: u64,
        keyframe: bool,
        data: &[u8],
    ) -> Result<(), WriteError> {
        let lane = usize::from(track != VIDEO);
        let at_ms = at_ms
            .max(self.last_of[lane].map_or(0, |t| t + 1))
            .max(self.cluster.unwrap_or(0));
        let new_cluster = match self.cluster {
            None => true,
            Some(c) => (track == VIDEO && keyframe) || at_ms - c >= CLUSTER_MS,
        };
        if new_cluster {
            if self.cluster.is_some() {
                self.out.write(&MatroskaSpec::Cluster(Master::End))?;
            }
            self.out.write_advanced(
                &MatroskaSpec::Cluster(Master::Start),
                WriteOptions::is_unknown_sized_element(),
            )?;
            self.out.write(&MatroskaSpec::Timestamp(at_ms))?;
            self.cluster = Some(at_ms);
        }
        let offset = at_ms - self.cluster.unwrap_or(at_ms);
        let block = SimpleBlock::new_uncheked(
            data,
            track,
            i16::try_from(offset).unwrap_or(i16::MAX),
            false,
            None,
            false,
            keyframe || track == AUDIO,
        );
        self.out.write(&MatroskaSpec::from(block))?;
        self.last_of[lane] = Some(at_ms);
        self.last_ms = self.last_ms.max(at_ms);
        Ok(())
    }

    /// Time of the last block, ms.
    pub fn last_ms(&self) -> u64 {
        self.last_ms
    }

    /// Write what is buffered and the duration, and hand back the destination.
    pub fn finish(mut self) -> Result<W, WriteError> {
        self.out.flush()?;
        let mut dest = self.out.into_inner()?;
        write_duration(&mut dest, self.slot_at, self.last_ms)
            .map_err(|source| TagWriterError::WriteError { source })?;
        Ok(dest)
    }
}

/// Put `ms` in the duration slot at `at`.
fn write_duration<W: Write + Seek>(dest: &mut W, at: u64, ms: u64) -> std::io::Result<()> {
    let end = dest.seek(SeekFrom::End(0))?;
    let mut el = vec![0x44, 0x89, 0x88];
    el.extend_from_slice(&(ms as f64).to_be_bytes());
    dest.seek(SeekFrom::Start(at))?;
    dest.write_all(&el)?;
    dest.seek(SeekFrom::Start(end))?;
    dest.flush()
}

/// A recording cut off before it was finished (the node was killed, the disk filled):
/// give it its duration, from its last whole block. `Ok(None)`: it was finished already.
pub fn repair<F: Read + Write + Seek>(file: &mut F) -> std::io::Result<Option<u64>> {
    let mut head = [0u8; 4096];
    file.seek(SeekFrom::Start(0))?;
    let n = file.read(&mut head)?;
    let Some(at) = head[..n]
        .windows(DURATION_SLOT.len())
        .position(|w| w == DURATION_SLOT)
    else {
        return Ok(None);
    };
    file.seek(SeekFrom::Start(0))?;
    let mut last = 0u64;
    {
        let mut tags = WebmIterator::new(&mut *file, &[]);
        let mut cluster = 0u64;
        for tag in &mut tags {
            match tag {
                Ok(MatroskaSpec::Timestamp(t)) => cluster = t,
                Ok(ref t @ MatroskaSpec::SimpleBlock(_)) => {
                    if let Ok(b) = SimpleBlock::try_from(t) {
                        last = last.max(cluster.saturating_add_signed(i64::from(b.timestamp)));
                    }
                }
                Ok(_) => {}
                // The cut: what follows is not whole.
                Err(_) => break,
            }
        }
    }
    write_duration(file, at as u64, last)?;
    Ok(Some(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Duration (ms) the file's Info says, if any.
    fn duration(bytes: &[u8]) -> Option<f64> {
        // An error ends the reading (the iterator would repeat it).
        WebmIterator::new(Cursor::new(bytes), &[])
            .take(100_000)
            .map_while(Result::ok)
            .find_map(|t| match t {
                MatroskaSpec::Duration(d) => Some(d),
                _ => None,
            })
    }

    fn blocks(bytes: &[u8]) -> Vec<(u64, u64)> {
        let mut cluster = 0;
        let mut out = Vec::new();
        for t in WebmIterator::new(Cursor::new(bytes), &[]).take(100_000) {
            match t {
                Ok(MatroskaSpec::Timestamp(c)) => cluster = c,
                Ok(ref t @ MatroskaSpec::SimpleBlock(_)) => {
                    let b = SimpleBlock::try_from(t).expect("block");
                    out.push((b.track, cluster + b.timestamp as u64));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        out
    }

    #[test]
    fn a_finished_file_has_its_duration_and_a_cut_one_gets_it_back() {
        let mut m = Muxer::new(Cursor::new(Vec::new()), 320, 240).expect("header");
        for i in 0..700u64 {
            m.block(AUDIO, i * 20, true, &[0xfc, 1, 2]).expect("audio");
            if i % 3 == 0 {
                // Now and then a frame comes timed at or before the last one (a jittery
                // camera): it is moved just after it.
                let at = if i % 30 == 0 {
                    (i * 20).saturating_sub(100)
                } else {
                    i * 20
                };
                m.block(VIDEO, at, i % 150 == 0, &[0x10; 300])
                    .expect("video");
            }
        }
        let bytes = m.finish().expect("finish").into_inner();
        assert_eq!(duration(&bytes), Some(13_980.0));
        let b = blocks(&bytes);
        assert_eq!(b.len(), 700 + 234);
        let times = |track| {
            b.iter()
                .filter(|(t, _)| *t == track)
                .map(|(_, at)| *at)
                .collect::<Vec<_>>()
        };
        for track in [VIDEO, AUDIO] {
            assert!(
                times(track).windows(2).all(|w| w[0] < w[1]),
                "each track's times only go up"
            );
        }
        assert!(b.iter().any(|(t, _)| *t == VIDEO) && b.iter().any(|(t, _)| *t == AUDIO));

        // Cut off mid-block (a kill): no duration, blocks up to the cut, then repaired.
        let mut m = Muxer::new(Cursor::new(Vec::new()), 320, 240).expect("header");
        for i in 0..500u64 {
            m.block(AUDIO, i * 20, true, &[0xfc; 40]).expect("audio");
        }
        let mut bytes = m.finish().expect("finish").into_inner();
        // As it was before the end: the slot still empty, and the last block half written.
        let slot = bytes
            .windows(3)
            .position(|w| w == [0x44, 0x89, 0x88])
            .expect("duration");
        bytes[slot..slot + 11].copy_from_slice(&DURATION_SLOT);
        bytes.truncate(bytes.len() - 20);
        assert_eq!(duration(&bytes), None);
        let mut file = Cursor::new(bytes);
        assert_eq!(repair(&mut file).expect("repair"), Some(9_960));
        assert_eq!(duration(file.get_ref()), Some(9_960.0));
        assert_eq!(repair(&mut file).expect("again"), None, "once only");
    }
}

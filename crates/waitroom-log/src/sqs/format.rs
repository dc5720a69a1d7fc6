//! What travels through the queues and sits in S3, byte by byte: intake messages, copies (the
//! stamped chunks every node queue receives, and the answers to markers) and history objects.
//! Records are opaque here: each names its room inside, which only the node decodes.
//! Every encoding starts with a version byte; SQS bodies are text, so messages travel as base64
//! of these bytes. Decoding never panics: damaged input is an error.

use base64::Engine;
use bytes::Bytes;

use super::settings::RECORD_FRAME_BYTES;

const VERSION: u8 = 1;

const INTAKE_RECORDS: u8 = 1;
const INTAKE_MARKER: u8 = 2;

const COPY_CHUNK: u8 = 1;
const COPY_HEAD_ANSWER: u8 = 2;

const OBJECT: u8 = 1;

/// One message of the intake queue (its message group is the group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Intake {
    /// Records appended to rooms of the group, in order.
    Records { group: u32, records: Vec<Bytes> },
    /// `head()` asks for the group's last sequence number: the answer goes to `reply_to`.
    Marker {
        group: u32,
        marker: u64,
        reply_to: String,
    },
}

/// One message of a node queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Copy {
    /// Records of a stamped history object, from sequence number `first` on.
    Chunk(Chunk),
    /// The answer to a `head()` marker: the group's last sequence number when the marker was
    /// stamped (0: none yet).
    HeadAnswer { group: u32, marker: u64, end: u64 },
}

/// A run of stamped records of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) group: u32,
    /// The first and last sequence numbers of the chunk's history object.
    pub(crate) object_first: u64,
    pub(crate) object_end: u64,
    /// The sequence number of the first record.
    pub(crate) first: u64,
    pub(crate) timestamp_ms: u64,
    /// The intake message ids of the chunk's history object: their appends are committed.
    pub(crate) message_ids: Vec<String>,
    pub(crate) records: Vec<Bytes>,
}

/// One history object: a stamped batch of a group, as stored in S3 under the key of its first
/// sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Object {
    pub(crate) group: u32,
    /// The sequence number of the first record (the key).
    pub(crate) first: u64,
    pub(crate) timestamp_ms: u64,
    /// The ids of the intake messages this object accounts for: every message of the received
    /// batch up to the last one it holds (see "Exactly once" in the module documentation).
    pub(crate) message_ids: Vec<String>,
    pub(crate) records: Vec<Bytes>,
}

impl Object {
    /// The sequence number of the last record.
    pub(crate) fn end(&self) -> u64 {
        self.first + self.records.len() as u64 - 1
    }
}

/// Why bytes did not decode.
#[derive(Debug)]
pub(crate) struct Damaged(pub(crate) &'static str);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(kind: u8) -> Self {
        Self(vec![VERSION, kind])
    }
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn short(&mut self, text: &str) {
        // Names are checked far below 256 bytes before they get here.
        let bytes = &text.as_bytes()[..text.len().min(255)];
        self.0.push(bytes.len() as u8);
        self.0.extend_from_slice(bytes);
    }
    fn long(&mut self, text: &str) {
        let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
        self.0
            .extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }
    /// Message ids (at most 255: a receive brings 10).
    fn ids(&mut self, ids: &[String]) {
        self.u8(ids.len().min(255) as u8);
        for id in ids.iter().take(255) {
            self.short(id);
        }
    }
    fn records(&mut self, records: &[Bytes]) {
        self.0
            .extend_from_slice(&(records.len() as u32).to_be_bytes());
        for record in records {
            self.0
                .extend_from_slice(&(record.len() as u32).to_be_bytes());
            self.0.extend_from_slice(record);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    /// The whole buffer, so records are cut from it without copying.
    whole: &'a Bytes,
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader after the version byte; returns the kind byte too.
    fn new(whole: &'a Bytes) -> Result<(Self, u8), Damaged> {
        let mut reader = Self {
            bytes: whole,
            whole,
            at: 0,
        };
        if reader.u8()? != VERSION {
            return Err(Damaged("an encoding version this build does not know"));
        }
        let kind = reader.u8()?;
        Ok((reader, kind))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Damaged> {
        let end = self
            .at
            .checked_add(n)
            .ok_or(Damaged("a length overflows"))?;
        let slice = self.bytes.get(self.at..end).ok_or(Damaged("cut short"))?;
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, Damaged> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Damaged> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }
    fn u32(&mut self) -> Result<u32, Damaged> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
    fn u64(&mut self) -> Result<u64, Damaged> {
        let bytes = self.take(8)?;
        let mut array = [0; 8];
        array.copy_from_slice(bytes);
        Ok(u64::from_be_bytes(array))
    }
    fn text(&mut self, len: usize) -> Result<String, Damaged> {
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Damaged("a name that is not UTF-8"))
    }
    fn short(&mut self) -> Result<String, Damaged> {
        let len = self.u8()? as usize;
        self.text(len)
    }
    fn long(&mut self) -> Result<String, Damaged> {
        let len = self.u16()? as usize;
        self.text(len)
    }
    fn ids(&mut self) -> Result<Vec<String>, Damaged> {
        let count = self.u8()? as usize;
        (0..count).map(|_| self.short()).collect()
    }
    fn records(&mut self) -> Result<Vec<Bytes>, Damaged> {
        let count = self.u32()? as usize;
        // Each record takes at least its length: a count beyond what is left is damage, and
        // must not make this allocate.
        if count > (self.bytes.len() - self.at) / RECORD_FRAME_BYTES {
            return Err(Damaged("more records than bytes"));
        }
        let mut records = Vec::with_capacity(count);
        for _ in 0..count {
            let len = self.u32()? as usize;
            let start = self.at;
            self.take(len)?;
            records.push(self.whole.slice(start..start + len));
        }
        Ok(records)
    }
    fn finish(self) -> Result<(), Damaged> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(Damaged("bytes left over"))
        }
    }
}

/// The raw bytes a record takes in an encoding (its length frame included).
pub(crate) fn framed_bytes(record: &[u8]) -> usize {
    RECORD_FRAME_BYTES + record.len()
}

/// Text for an SQS body.
pub(crate) fn to_body(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of an SQS body.
pub(crate) fn from_body(body: &str) -> Result<Bytes, Damaged> {
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map(Bytes::from)
        .map_err(|_| Damaged("a message body that is not base64"))
}

impl Intake {
    pub(crate) fn group(&self) -> u32 {
        match self {
            Intake::Records { group, .. } | Intake::Marker { group, .. } => *group,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Intake::Records { group, records } => {
                let mut writer = Writer::new(INTAKE_RECORDS);
                writer.u32(*group);
                writer.records(records);
                writer.0
            }
            Intake::Marker {
                group,
                marker,
                reply_to,
            } => {
                let mut writer = Writer::new(INTAKE_MARKER);
                writer.u32(*group);
                writer.u64(*marker);
                writer.long(reply_to);
                writer.0
            }
        }
    }

    pub(crate) fn decode(bytes: &Bytes) -> Result<Self, Damaged> {
        let (mut reader, kind) = Reader::new(bytes)?;
        let group = reader.u32()?;
        let intake = match kind {
            INTAKE_RECORDS => Intake::Records {
                group,
                records: reader.records()?,
            },
            INTAKE_MARKER => Intake::Marker {
                group,
                marker: reader.u64()?,
                reply_to: reader.long()?,
            },
            _ => return Err(Damaged("an intake message of an unknown kind")),
        };
        reader.finish()?;
        Ok(intake)
    }
}

impl Copy {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Copy::Chunk(chunk) => {
                let mut writer = Writer::new(COPY_CHUNK);
                writer.u32(chunk.group);
                writer.u64(chunk.object_first);
                writer.u64(chunk.object_end);
                writer.u64(chunk.first);
                writer.u64(chunk.timestamp_ms);
                writer.ids(&chunk.message_ids);
                writer.records(&chunk.records);
                writer.0
            }
            Copy::HeadAnswer { group, marker, end } => {
                let mut writer = Writer::new(COPY_HEAD_ANSWER);
                writer.u32(*group);
                writer.u64(*marker);
                writer.u64(*end);
                writer.0
            }
        }
    }

    pub(crate) fn decode(bytes: &Bytes) -> Result<Self, Damaged> {
        let (mut reader, kind) = Reader::new(bytes)?;
        let group = reader.u32()?;
        let copy = match kind {
            COPY_CHUNK => Copy::Chunk(Chunk {
                group,
                object_first: reader.u64()?,
                object_end: reader.u64()?,
                first: reader.u64()?,
                timestamp_ms: reader.u64()?,
                message_ids: reader.ids()?,
                records: reader.records()?,
            }),
            COPY_HEAD_ANSWER => Copy::HeadAnswer {
                group,
                marker: reader.u64()?,
                end: reader.u64()?,
            },
            _ => return Err(Damaged("a node queue message of an unknown kind")),
        };
        reader.finish()?;
        Ok(copy)
    }
}

impl Object {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new(OBJECT);
        writer.u32(self.group);
        writer.u64(self.first);
        writer.u64(self.timestamp_ms);
        writer.ids(&self.message_ids);
        writer.records(&self.records);
        writer.0
    }

    pub(crate) fn decode(bytes: &Bytes) -> Result<Self, Damaged> {
        let (mut reader, kind) = Reader::new(bytes)?;
        if kind != OBJECT {
            return Err(Damaged("a history object of an unknown kind"));
        }
        let group = reader.u32()?;
        let first = reader.u64()?;
        let timestamp_ms = reader.u64()?;
        let message_ids = reader.ids()?;
        let records = reader.records()?;
        reader.finish()?;
        if first == 0 || records.is_empty() || first.checked_add(records.len() as u64).is_none() {
            return Err(Damaged("a history object whose positions do not add up"));
        }
        Ok(Self {
            group,
            first,
            timestamp_ms,
            message_ids,
            records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip_and_damage_is_an_error() {
        let records = vec![Bytes::from_static(b"one"), Bytes::from_static(b"")];
        let intakes = [
            Intake::Records {
                group: 3,
                records: records.clone(),
            },
            Intake::Marker {
                group: 1,
                marker: 7,
                reply_to: "http://q".into(),
            },
        ];
        for intake in intakes {
            let bytes = Bytes::from(intake.encode());
            assert_eq!(Intake::decode(&bytes).unwrap(), intake);
            for cut in 0..bytes.len() {
                assert!(Intake::decode(&bytes.slice(..cut)).is_err());
            }
        }
        let copies = [
            Copy::Chunk(Chunk {
                group: 2,
                object_first: 1,
                object_end: 4,
                first: 3,
                timestamp_ms: 99,
                message_ids: vec!["m".into()],
                records: records.clone(),
            }),
            Copy::HeadAnswer {
                group: 0,
                marker: 1,
                end: 2,
            },
        ];
        for copy in copies {
            let bytes = from_body(&to_body(&copy.encode())).unwrap();
            assert_eq!(Copy::decode(&bytes).unwrap(), copy);
        }
        let object = Object {
            group: 1,
            first: 5,
            timestamp_ms: 1,
            message_ids: vec!["a".into(), "b".into()],
            records,
        };
        assert_eq!(object.end(), 6);
        let bytes = Bytes::from(object.encode());
        assert_eq!(Object::decode(&bytes).unwrap(), object);
        let empty = Object {
            records: Vec::new(),
            ..object
        };
        assert!(Object::decode(&Bytes::from(empty.encode())).is_err());
        assert!(Object::decode(&Bytes::from_static(&[VERSION, OBJECT, 0, 0])).is_err());
        let mut huge_count = Writer::new(INTAKE_RECORDS);
        huge_count.u32(0);
        huge_count.0.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Intake::decode(&Bytes::from(huge_count.0)).is_err());
    }
}

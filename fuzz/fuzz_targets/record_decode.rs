//! `Record::decode` on arbitrary bytes: never a panic. What decodes must round-trip and apply to
//! a room without a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use waitroom_core::*;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = Record::decode(data) else {
        return;
    };
    assert_eq!(Record::decode(&record.encode()).as_ref(), Ok(&record));
    let mut room = Room::new(record.room.clone());
    let configure = Record::new(
        RecordId::from_u128(u128::MAX),
        record.room.clone(),
        Command::ConfigureRoom(RoomConfig::with_capacity(1)),
    );
    room.apply(&configure, 1_000);
    room.apply(&record, 2_000);
    room.apply(&record, 3_000);
    let _ = (room.stats(), room.digest());
});

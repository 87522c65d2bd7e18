//! Control messages of the guest protocol, from arbitrary JSON-ish bytes:
//! decoding never panics, and a message that decodes survives a round trip
//! through its encoding unchanged (one definition, both directions).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mags_proto::{Frame, GuestMsg, HostMsg};

fn round_trip<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(msg) = serde_json::from_slice::<T>(data) {
        let frame = Frame::control(1, &msg);
        let again: T = frame.parse().expect("our own encoding decodes");
        assert_eq!(again, msg);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<HostMsg>(data);
    round_trip::<GuestMsg>(data);
});
